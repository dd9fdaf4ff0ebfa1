// Package testkit is the tests' kit: what more than one package's tests
// need, in one place.
//
//   - Redis: real redis-server processes on free loopback ports
//     (StartRedis, SharedRedis with Main in TestMain) and real Redis
//     Clusters of them (StartRedisCluster, SharedRedisCluster,
//     StartOneNodeCluster); nothing stands in for Redis in a storage test.
//   - Ports: FreePort, and PortRange for runs of consecutive free ports.
//   - Waiting: Eventually and Within poll a condition.
//   - Nodes: UDPAnnounceURL reads a running node's udp:// announce URL.
//   - Hosts: NewNetns makes a network namespace joined to this host.
//   - Tiers: the heavy tests (browsers, real BitTorrent clients, network
//     namespaces, Docker, Prometheus, WebTorrent in Node) run only when
//     their tier's variable is set, and then fail, never skip, when what
//     they need is missing (see Tier).
//   - Front ends: Store, an in-memory tracker.Store, so that the front
//     ends' unit tests need no Redis.
//
// It is imported by tests only.
package testkit
