//! The Redis side of the cluster, an IO edge: each operation is one Lua script, so a check
//! and the write it decides run atomically in Redis (a claim is a `SET NX` that also accepts
//! our own key, and takes its epoch from `INCR` in the same step; a release deletes only our
//! claim), and each time-dependent one reads Redis's clock (`TIME`), not the nodes', so
//! nodes whose clocks disagree still agree on who is live.
//!
//! The connection is redis-rs's `ConnectionManager`: it reconnects by itself after a failure;
//! every operation here has a deadline ([`OP_TIMEOUT`]), so an unreachable Redis costs the
//! caller at most that, and the node keeps serving.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use super::lease::{Keys, NodeId, NodeLease, StreamClaim};
use super::membership::LEASE_TTL;
use super::ownership::{ClaimReply, RefreshReply, STREAM_TTL};

/// The longest any one Redis operation may take.
pub const OP_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long a stream name's epoch counter outlives its last publish: long enough that a
/// republish after a pause still counts up, short enough that names used once go away.
const EPOCH_TTL_MS: u64 = 24 * 3600 * 1000;

/// Why a Redis operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis answered with an error, or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer in time.
    #[error("redis did not answer in time")]
    Timeout,
    /// A script answered something it never answers.
    #[error("redis: unexpected answer: {0}")]
    Unexpected(String),
}

/// Claims a stream: refused when another node's claim holds the key; else a new epoch
/// (`INCR`) and the claim, with the stream's TTL, and a `stream_up` event.
/// KEYS: stream, epoch. ARGV: node, ttl ms, stream name, events channel, epoch ttl ms.
const CLAIM: &str = r#"
local current = redis.call('GET', KEYS[1])
if current then
  local ok, held = pcall(cjson.decode, current)
  if not ok or type(held) ~= 'table' or held.node ~= ARGV[1] then
    return {0, current}
  end
end
local epoch = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
local value = cjson.encode({node = ARGV[1], epoch = epoch})
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
redis.call('PUBLISH', ARGV[4], cjson.encode({event = 'stream_up', stream = ARGV[3], node = ARGV[1], epoch = epoch}))
return {1, value}
"#;

/// Refreshes our claim: 1 when it is there; 2 when the key was gone and is written back
/// (the epoch counter is raised to at least ours, so the next publish still counts up);
/// 0 and the holder's claim when another node holds it.
/// KEYS: stream, epoch. ARGV: our claim, ttl ms, our epoch, stream name, events channel, node,
/// epoch ttl ms.
const REFRESH: &str = r#"
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, ''}
end
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  local counted = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
  if counted < tonumber(ARGV[3]) then
    redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[7])
  end
  redis.call('PUBLISH', ARGV[5], cjson.encode({event = 'stream_up', stream = ARGV[4], node = ARGV[6], epoch = tonumber(ARGV[3])}))
  return {2, ''}
end
return {0, current}
"#;

/// Deletes our claim, and only ours, with a `stream_down` event. KEYS: stream. ARGV: our
/// claim, stream name, events channel, node.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[3], cjson.encode({event = 'stream_down', stream = ARGV[2], node = ARGV[4]}))
  return 1
end
return 0
"#;

/// Writes a node's lease and indexes it as live until it expires (Redis time), pruning the
/// index of nodes whose leases ran out; `node_up` when the lease is new, `node_draining` when
/// it turns DRAINING. KEYS: lease, index. ARGV: node, lease JSON, ttl ms, events channel.
const LEASE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local previous = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)
local lease = cjson.decode(ARGV[2])
if not previous then
  redis.call('PUBLISH', ARGV[4], cjson.encode({event = 'node_up', node = ARGV[1]}))
elseif lease.state == 'DRAINING' then
  local ok, before = pcall(cjson.decode, previous)
  if not ok or type(before) ~= 'table' or before.state ~= 'DRAINING' then
    redis.call('PUBLISH', ARGV[4], cjson.encode({event = 'node_draining', node = ARGV[1]}))
  end
end
return 1
"#;

/// The leases of the live nodes (indexed as live now, Redis time, and still stored).
/// KEYS: index. ARGV: node key prefix.
const LIVE_NODES: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
local leases = {}
for _, id in ipairs(ids) do
  local lease = redis.call('GET', ARGV[1] .. id)
  if lease then
    table.insert(leases, lease)
  end
end
return leases
"#;

/// The cluster's Redis.
#[derive(Clone)]
pub struct Store {
    connection: ConnectionManager,
    scripts: std::sync::Arc<Scripts>,
}

struct Scripts {
    claim: Script,
    refresh: Script,
    release: Script,
    lease: Script,
    live_nodes: Script,
}

impl Store {
    /// A store for the Redis at `url`, connected lazily (and again after each failure): an
    /// unreachable Redis does not keep the node from starting. Must be called on the tokio
    /// runtime that will run it.
    pub fn new(url: &str) -> Result<Store, StoreError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(OP_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Store {
            connection,
            scripts: std::sync::Arc::new(Scripts {
                claim: Script::new(CLAIM),
                refresh: Script::new(REFRESH),
                release: Script::new(RELEASE),
                lease: Script::new(LEASE),
                live_nodes: Script::new(LIVE_NODES),
            }),
        })
    }

    /// Claims `stream` for `node`, giving Redis at most `limit` to answer.
    pub async fn claim(
        &self,
        node: &NodeId,
        stream: &str,
        limit: Duration,
    ) -> Result<ClaimReply, StoreError> {
        let mut invocation = self.scripts.claim.prepare_invoke();
        invocation
            .key(Keys::stream(stream))
            .key(Keys::epoch(stream))
            .arg(node.as_str())
            .arg(STREAM_TTL.as_millis() as u64)
            .arg(stream)
            .arg(Keys::EVENTS)
            .arg(EPOCH_TTL_MS);
        let mut connection = self.connection.clone();
        let (claimed, value): (i64, String) =
            deadline(limit, invocation.invoke_async(&mut connection)).await?;
        let claim = StreamClaim::parse(&value);
        match (claimed, claim) {
            (1, Some(claim)) => Ok(ClaimReply::Claimed(claim)),
            (0, Some(claim)) => Ok(ClaimReply::Taken(claim)),
            // A key that is not one of our claims is held by something else: not ours to take.
            (0, None) => Ok(ClaimReply::Taken(StreamClaim {
                node: NodeId::new(Some("unknown"), 0),
                epoch: 0,
                raw: value,
            })),
            _ => Err(StoreError::Unexpected(value)),
        }
    }

    /// Refreshes our `claim` of `stream`, writing it back when the key is gone.
    pub async fn refresh(
        &self,
        node: &NodeId,
        stream: &str,
        claim: &StreamClaim,
    ) -> Result<(RefreshReply, Option<StreamClaim>), StoreError> {
        let mut invocation = self.scripts.refresh.prepare_invoke();
        invocation
            .key(Keys::stream(stream))
            .key(Keys::epoch(stream))
            .arg(&claim.raw)
            .arg(STREAM_TTL.as_millis() as u64)
            .arg(claim.epoch)
            .arg(stream)
            .arg(Keys::EVENTS)
            .arg(node.as_str())
            .arg(EPOCH_TTL_MS);
        let mut connection = self.connection.clone();
        let (reply, holder): (i64, String) =
            deadline(OP_TIMEOUT, invocation.invoke_async(&mut connection)).await?;
        match reply {
            1 => Ok((RefreshReply::Refreshed, None)),
            2 => Ok((RefreshReply::Reasserted, None)),
            0 => Ok((RefreshReply::Taken, StreamClaim::parse(&holder))),
            _ => Err(StoreError::Unexpected(format!("{reply}"))),
        }
    }

    /// Deletes `stream`'s key if it holds our `claim`; whether it did.
    pub async fn release(
        &self,
        node: &NodeId,
        stream: &str,
        claim: &StreamClaim,
    ) -> Result<bool, StoreError> {
        let mut invocation = self.scripts.release.prepare_invoke();
        invocation
            .key(Keys::stream(stream))
            .arg(&claim.raw)
            .arg(stream)
            .arg(Keys::EVENTS)
            .arg(node.as_str());
        let mut connection = self.connection.clone();
        let released: i64 = deadline(OP_TIMEOUT, invocation.invoke_async(&mut connection)).await?;
        Ok(released == 1)
    }

    /// The claim of `stream`, if a node holds it (a value that is not a claim reads as none).
    pub async fn stream_owner(&self, stream: &str) -> Result<Option<StreamClaim>, StoreError> {
        let mut connection = self.connection.clone();
        let value: Option<String> = deadline(
            OP_TIMEOUT,
            redis::cmd("GET")
                .arg(Keys::stream(stream))
                .query_async(&mut connection),
        )
        .await?;
        Ok(value.as_deref().and_then(StreamClaim::parse))
    }

    /// Writes our lease (`lease` is its JSON) for [`LEASE_TTL`].
    pub async fn write_lease(&self, node: &NodeId, lease: &str) -> Result<(), StoreError> {
        let mut invocation = self.scripts.lease.prepare_invoke();
        invocation
            .key(Keys::node(node))
            .key(Keys::NODES)
            .arg(node.as_str())
            .arg(lease)
            .arg(LEASE_TTL.as_millis() as u64)
            .arg(Keys::EVENTS);
        let mut connection = self.connection.clone();
        let _: i64 = deadline(OP_TIMEOUT, invocation.invoke_async(&mut connection)).await?;
        Ok(())
    }

    /// Sends `event` (JSON) on the cluster's events channel, for whoever listens.
    pub async fn publish_event(&self, event: &serde_json::Value) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        let _: i64 = deadline(
            OP_TIMEOUT,
            redis::cmd("PUBLISH")
                .arg(Keys::EVENTS)
                .arg(event.to_string())
                .query_async(&mut connection),
        )
        .await?;
        Ok(())
    }

    /// The leases of the live nodes; one that does not parse is skipped.
    pub async fn live_nodes(&self) -> Result<Vec<NodeLease>, StoreError> {
        let mut invocation = self.scripts.live_nodes.prepare_invoke();
        invocation.key(Keys::NODES).arg(Keys::NODE_PREFIX);
        let mut connection = self.connection.clone();
        let leases: Vec<String> =
            deadline(OP_TIMEOUT, invocation.invoke_async(&mut connection)).await?;
        Ok(leases
            .iter()
            .filter_map(|lease| serde_json::from_str(lease).ok())
            .collect())
    }
}

async fn deadline<T>(
    limit: Duration,
    operation: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, operation).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(StoreError::Timeout),
    }
}
