package main

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/tracklink/tracklink/internal/allowed"
	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/httpapi"
	"github.com/tracklink/tracklink/internal/torrentfile"
)

// torrentRoutes are the allowed-torrents endpoints: the admin API (list,
// upload, delete; token required) and the public download of a carried
// .torrent.
func torrentRoutes(set *allowed.Set, token string) []httpapi.Route {
	admin := func(h http.HandlerFunc) http.Handler { return httpapi.RequireToken(token, h) }
	return []httpapi.Route{
		{Method: "GET", Pattern: "/admin/torrents", Handler: admin(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(set.List())
		})},
		{Method: "POST", Pattern: "/admin/torrents", Handler: admin(func(w http.ResponseWriter, r *http.Request) {
			b, err := io.ReadAll(io.LimitReader(r.Body, torrentfile.MaxSize+1))
			if err != nil {
				http.Error(w, "reading body: "+err.Error(), http.StatusBadRequest)
				return
			}
			if len(b) > torrentfile.MaxSize {
				http.Error(w, "torrent too large", http.StatusRequestEntityTooLarge)
				return
			}
			ih, err := set.Add(r.Context(), b)
			if err != nil {
				if ce, ok := bittorrent.IsClientError(err); ok {
					http.Error(w, string(ce), http.StatusBadRequest)
					return
				}
				http.Error(w, "storing torrent failed", http.StatusInternalServerError)
				return
			}
			w.WriteHeader(http.StatusCreated)
			w.Write([]byte(ih.String() + "\n"))
		})},
		{Method: "DELETE", Pattern: "/admin/torrents/{infohash}", Handler: admin(func(w http.ResponseWriter, r *http.Request) {
			ih, err := bittorrent.ParseInfoHash(chi.URLParam(r, "infohash"))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			if err := set.Remove(r.Context(), ih); err != nil {
				status := http.StatusInternalServerError
				if errors.Is(err, allowed.ErrNotCarried) {
					status = http.StatusNotFound
				}
				http.Error(w, err.Error(), status)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		})},
		{Method: "GET", Pattern: "/torrents/{name}", Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
		})},
	}
}
