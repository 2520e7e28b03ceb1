// The cluster suite (cluster.test.mjs) again, every Redis replaced by two shards: each test's
// nodes get --broker=redis://A,redis://B (two redis-servers of their own), so a user's keys
// live on one of them, picked by the consistent hash of its id. Every test must pass
// unchanged: order, cross-node resume after SIGKILL, the cluster-wide cap, outages, runs,
// run timeouts, isolation, prefixes and flag forms.
process.env.AGENTCAST_TEST_SHARDS = '2';
await import('./cluster.test.mjs');
