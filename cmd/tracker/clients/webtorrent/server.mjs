// bittorrent-tracker's own server, WebSocket only, for the side-by-side
// measurement (wsbench_test.go). Prints "listening" once it listens.
//   node server.mjs PORT
import { Server } from 'bittorrent-tracker'

const port = Number(process.argv[2])
const server = new Server({ udp: false, http: false, ws: true, stats: false })
server.on('error', (e) => { console.error(e); process.exit(1) })
server.on('warning', () => {})
server.listen(port, '127.0.0.1', () => console.log('listening'))
process.on('SIGTERM', () => server.close(() => process.exit(0)))
