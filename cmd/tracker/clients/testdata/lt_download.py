"""Download one torrent with libtorrent (Debian's python3-libtorrent), a
BitTorrent client Tracklink did not write, finding peers only through the
torrent's trackers: no DHT, local discovery, UPnP or NAT-PMP; on loopback
unless LT_LISTEN names another address.

    python3 lt_download.py FILE.torrent SAVE_DIR TIMEOUT_SECONDS [PRIORITIES]

Exits 0 once the whole torrent is downloaded and checked, 1 on timeout.
With PRIORITIES (one per file, comma-separated; 0 skips the file) it
downloads the wanted files only: once they are done it is a partial seed
(BEP 21), announces again (libtorrent then sends event=paused), prints
"partial seed" on stdout and stays until it is killed.
Tracker replies and errors go to stderr, so a failing test shows them.
"""
import os
import sys
import time

import libtorrent as lt

torrent, save, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
priorities = [int(p) for p in sys.argv[4].split(",")] if len(sys.argv) > 4 else None
ses = lt.session({
    # LT_LISTEN: another address, for a client on a test's own host.
    "listen_interfaces": os.environ.get("LT_LISTEN", "127.0.0.1:0"),
    "enable_dht": False,
    "enable_lsd": False,
    "enable_upnp": False,
    "enable_natpmp": False,
    "enable_incoming_utp": False,
    "enable_outgoing_utp": False,
    # The seeder runs on the same loopback address.
    "allow_multiple_connections_per_ip": True,
    "alert_mask": lt.alert.category_t.tracker_notification | lt.alert.category_t.error_notification,
})
atp = lt.add_torrent_params()
atp.ti = lt.torrent_info(torrent)
atp.save_path = save
if priorities is not None:
    atp.file_priorities = priorities
h = ses.add_torrent(atp)
deadline = time.time() + timeout
while time.time() < deadline:
    for a in ses.pop_alerts():
        print("libtorrent:", a.message(), file=sys.stderr)
    s = h.status()
    if priorities is not None and s.is_finished and not s.is_seeding:
        # (The tracker's min interval would hold an ordinary reannounce.)
        h.force_reannounce(0, -1, lt.reannounce_flags_t.ignore_min_interval)
        print("partial seed", flush=True)
        while True:
            for a in ses.pop_alerts():
                print("libtorrent:", a.message(), file=sys.stderr)
            time.sleep(0.1)
    if s.is_seeding:
        print("done", s.total_wanted, file=sys.stderr)
        sys.exit(0)
    time.sleep(0.1)
s = h.status()
print("timeout: %d of %d bytes, %d peers" % (s.total_wanted_done, s.total_wanted, s.num_peers), file=sys.stderr)
sys.exit(1)
