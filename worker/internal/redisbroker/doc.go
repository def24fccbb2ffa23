// Package redisbroker is kombu's Redis transport and Celery's Redis result
// backend, as seen from a worker: it takes messages off a queue's priority
// lists, keeps them in kombu's `unacked` hash and `unacked_index` sorted set
// while they are in flight, acknowledges, re-queues and dead-letters them,
// restores the messages of dead workers under kombu's `unacked_mutex`, and
// stores results the way Python's AsyncResult reads them.
//
// # Never losing a message
//
// kombu's worker takes a message with BRPOP and only then writes it to
// `unacked`; a worker killed between the two replies loses the message. Here
// the move from the queue list to `unacked` is one Lua script (RPOP, ZADD,
// HSET), which Redis runs entirely or not at all: a message is always either
// in a queue list or in `unacked`. Scripts cannot block, so while the queues
// are empty the broker waits with `BLMOVE q q RIGHT RIGHT`, which pops the
// oldest element and pushes it back to the same end in one atomic step: a
// blocking peek that changes nothing. It then runs the script. Only the
// unprioritised list is watched this way; the priority lists (\x06\x163 etc.)
// are polled at the end of each wait (one second by default), the same cadence
// as kombu's own BRPOP timeout.
//
// Every other transition is also a single MULTI/EXEC or script: acknowledge
// (ZREM + HDEL), retry (LPUSH of the new message + ZREM + HDEL of the old),
// dead-letter (LPUSH to `<queue>.dead` + ZREM + HDEL), restore (RPUSH + ZREM +
// HDEL, under WATCH as kombu does).
//
// While a message is held (running, or waiting for its eta) its
// `unacked_index` score is refreshed, so a Python worker's restore only ever
// re-queues messages whose holder stopped refreshing them: a dead process.
//
// # Bounded messages
//
// With Config.MaxMessageBytes set, the fetch script moves a longer list entry
// whole to the dead list inside Redis and returns only its envelope with the
// body cut out (at most 64 KiB), so the worker can fail the task by id
// without ever holding the body. The blocking peek's reply is the oldest
// element, of any size: it is read on a raw connection that skips bulk
// replies on the socket instead of storing them.
//
// # kombu's options and connections
//
// Options are kombu's Redis transport options: global_keyprefix prefixes
// every key and channel as kombu's PrefixedStrictRedis does (queue lists,
// unacked*, bindings, fanout channels), sep and priority_steps name the
// priority lists as kombu's _q_for_pri does. ParseURL reads every URL form
// Celery takes (redis, rediss with the ssl_* parameters, redis+socket, socket,
// unix, sentinel); with sentinel:// the master is asked of the sentinels on
// every new connection and its ROLE checked, so redials follow a failover.
package redisbroker
