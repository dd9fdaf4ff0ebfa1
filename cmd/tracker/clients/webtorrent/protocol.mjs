// bittorrent-tracker's own client against the tracker: two clients of one
// torrent, each on its own tracker URL (two processes of one node), must
// each see the other as a peer (a WebRTC connection made from an offer
// and answer the tracker carried across processes), get announce updates
// with the counts, a scrape, and see the counts fall after a stop. Prints
// one JSON line and exits 0 on success.
//   node protocol.mjs ws://127.0.0.1:P1/announce ws://127.0.0.1:P2/announce
import { randomBytes } from 'node:crypto'
import wrtc from '@roamhq/wrtc'
import Client from 'bittorrent-tracker'

const [urlA, urlB] = process.argv.slice(2)
const fail = (msg) => { console.error(msg); process.exit(1) }
setTimeout(() => fail('protocol checks did not finish within 60 s'), 60_000).unref()

// Info hash and peer ids with bytes above 127 and control bytes: the
// latin1 encoding must carry them intact.
const infoHash = Buffer.concat([Buffer.from([0x00, 0x22, 0x5c, 0xff, 0x80]), randomBytes(15)]).toString('hex')
const mk = (url, seed) => new Client({ infoHash, peerId: Buffer.concat([Buffer.from([0xe9, 0x0a]), randomBytes(18)]).toString('hex'),
  announce: [url], port: 6881, wrtc, getAnnounceOpts: () => ({ left: seed ? 0 : 1000, uploaded: 0, downloaded: 0 }) })
const a = mk(urlA, true)
const b = mk(urlB, false)
const seen = { a: null, b: null, peerA: false, peerB: false, scrape: null }
for (const [name, c] of [['a', a], ['b', b]]) {
  c.on('error', (e) => fail(name + ': ' + e.message))
  c.on('warning', (e) => fail(name + ' warning: ' + e.message))
  c.on('update', (d) => { seen[name] = d; check() })
  c.on('peer', (p) => {
    p.once('connect', () => { seen[name === 'a' ? 'peerA' : 'peerB'] = true; check() })
  })
  c.on('scrape', (d) => { seen.scrape = d; check() })
}
let scraped = false
let finished = false
function check () {
  if (finished) return
  if (seen.peerA && seen.peerB && !scraped) {
    scraped = true
    b.scrape()
  }
  if (seen.scrape && seen.peerA && seen.peerB) {
    const s = seen.scrape
    if (s.complete !== 1 || s.incomplete !== 1) fail('scrape counts: ' + JSON.stringify(s))
    if (seen.a.interval !== undefined && seen.a.interval <= 0) fail('interval')
    finished = true
    console.log(JSON.stringify({ ok: true, update: { complete: seen.b.complete, incomplete: seen.b.incomplete }, scrape: { complete: s.complete, incomplete: s.incomplete, downloaded: s.downloaded } }))
    a.stop(); b.stop()
    setTimeout(() => { a.destroy(); b.destroy(); process.exit(0) }, 300)
  }
}
a.start()
setTimeout(() => b.start(), 300)
