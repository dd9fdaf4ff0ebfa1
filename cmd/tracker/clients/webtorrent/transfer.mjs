// A real WebTorrent transfer over WebRTC between two peers that meet
// through two different tracker processes: the seeder announces to the
// first URL only, the downloader to the second only. Prints one JSON line
// and exits 0 when the downloaded file's SHA-256 matches.
//   node transfer.mjs ws://127.0.0.1:P1/announce ws://127.0.0.1:P2/announce
import { createHash, randomBytes } from 'node:crypto'
import wrtc from '@roamhq/wrtc'
import WebTorrent from 'webtorrent'

const [seedURL, leechURL] = process.argv.slice(2)
if (!seedURL || !leechURL) {
  console.error('usage: node transfer.mjs SEED_TRACKER_URL LEECH_TRACKER_URL')
  process.exit(2)
}
const opts = { dht: false, lsd: false, utp: false, natUpnp: false, natPmp: false, webSeeds: false, tracker: { wrtc } }
const seeder = new WebTorrent(opts)
const leecher = new WebTorrent(opts)
const fail = (msg) => { console.error(msg); process.exit(1) }
setTimeout(() => fail('transfer did not finish within 90 s'), 90_000).unref()
seeder.on('error', (e) => fail('seeder: ' + e))
leecher.on('error', (e) => fail('leecher: ' + e))

const data = randomBytes(3 * 1024 * 1024 + 12345)
const want = createHash('sha256').update(data).digest('hex')
const file = Object.assign(Buffer.from(data), { name: 'generated.bin' })
const started = Date.now()
seeder.seed(file, { announce: [seedURL], name: 'generated.bin' }, (t) => {
  const magnet = `magnet:?xt=urn:btih:${t.infoHash}&tr=${encodeURIComponent(leechURL)}`
  leecher.add(magnet, { announce: [leechURL] }, (lt) => {
    lt.on('done', async () => {
      const f = lt.files[0]
      const got = createHash('sha256').update(Buffer.from(await f.arrayBuffer())).digest('hex')
      const ok = got === want
      console.log(JSON.stringify({ ok, bytes: data.length, sha256: got, wires: lt.wires.length, ms: Date.now() - started }))
      seeder.destroy(); leecher.destroy()
      process.exit(ok ? 0 : 1)
    })
  })
})
