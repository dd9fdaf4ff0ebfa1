package main

import (
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/tracklink/tracklink/internal/allowed"
	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/httpapi"
)

// torrentRoutes is the public download of a carried .torrent (the admin
// API that lists, uploads and deletes them is on the admin listener).
func torrentRoutes(set *allowed.Set) httpapi.Route {
	return httpapi.Route{Method: "GET", Pattern: "/torrents/{name}", Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, ok := strings.CutSuffix(chi.URLParam(r, "name"), ".torrent")
		ih, err := bittorrent.ParseInfoHash(name)
		if !ok || err != nil {
			http.NotFound(w, r)
			return
		}
		b, err := set.File(ih)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/x-bittorrent")
		w.Write(b)
	})}
}
