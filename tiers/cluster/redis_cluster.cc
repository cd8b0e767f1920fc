#include "tiers/cluster/redis_cluster.h"

#include <hiredis/hiredis.h>
#include <sys/time.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <map>
#include <optional>

#include "common/log.h"

namespace kvtier {
namespace {

constexpr int kSlots = 16384;
// A node that failed is not dialled again for this long: requests routed to
// it fail at once (a miss) instead of each waiting out a connect timeout.
constexpr int64_t kDownBackoffMs = 500;

int64_t SteadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

timeval Tv(int ms) {
  timeval tv{};
  tv.tv_sec = ms / 1000;
  tv.tv_usec = (ms % 1000) * 1000;
  return tv;
}

uint16_t Crc16(std::string_view s) {
  uint16_t crc = 0;
  for (unsigned char c : s) {
    crc ^= static_cast<uint16_t>(c) << 8;
    for (int i = 0; i < 8; ++i) {
      crc = (crc & 0x8000) != 0 ? static_cast<uint16_t>((crc << 1) ^ 0x1021)
                                : static_cast<uint16_t>(crc << 1);
    }
  }
  return crc;
}

std::string HostPort(const std::string& host, int port) {
  return host + ":" + std::to_string(port);
}

// "MOVED 3999 127.0.0.1:6381" / "ASK 3999 127.0.0.1:6381".
bool ParseRedirect(std::string_view err, std::string_view kind, int* slot, std::string* host,
                   int* port) {
  if (err.substr(0, kind.size() + 1) != std::string(kind) + " ") return false;
  err.remove_prefix(kind.size() + 1);
  const size_t sp = err.find(' ');
  if (sp == std::string_view::npos) return false;
  if (std::from_chars(err.data(), err.data() + sp, *slot).ec != std::errc() || *slot < 0 ||
      *slot >= kSlots) {
    return false;
  }
  return ParseHostPort(err.substr(sp + 1), host, port, "redirection").ok();
}

}  // namespace

uint16_t RedisKeySlot(std::string_view key) {
  const size_t open = key.find('{');
  if (open != std::string_view::npos) {
    const size_t close = key.find('}', open + 1);
    if (close != std::string_view::npos && close > open + 1) {
      key = key.substr(open + 1, close - open - 1);
    }
  }
  return Crc16(key) % kSlots;
}

Status ParseHostPort(std::string_view text, std::string* host, int* port, std::string_view what) {
  const size_t colon = text.rfind(':');
  int p = 0;
  const char* end = text.data() + text.size();
  const auto parsed = colon == std::string_view::npos
                          ? std::from_chars_result{text.data(), std::errc::invalid_argument}
                          : std::from_chars(text.data() + colon + 1, end, p);
  if (colon == std::string_view::npos || colon == 0 || parsed.ec != std::errc() ||
      parsed.ptr != end || p <= 0 || p > 65535) {
    return Status::InvalidArgument(std::string(what) + ": \"" + std::string(text) +
                                   "\" is not host:port");
  }
  *host = std::string(text.substr(0, colon));
  *port = p;
  return Status::Ok();
}

// --- RedisReply -----------------------------------------------------------------

RedisReply::Type RedisReply::type() const {
  switch (r_ == nullptr ? REDIS_REPLY_NIL : r_->type) {
    case REDIS_REPLY_STRING:
      return Type::kString;
    case REDIS_REPLY_ARRAY:
      return Type::kArray;
    case REDIS_REPLY_INTEGER:
      return Type::kInteger;
    case REDIS_REPLY_STATUS:
      return Type::kStatus;
    case REDIS_REPLY_ERROR:
      return Type::kError;
    default:
      return Type::kNil;
  }
}

std::string_view RedisReply::str() const {
  if (r_ == nullptr || r_->str == nullptr) return {};
  return std::string_view(r_->str, r_->len);
}

long long RedisReply::integer() const { return r_ == nullptr ? 0 : r_->integer; }

size_t RedisReply::size() const {
  return r_ != nullptr && r_->type == REDIS_REPLY_ARRAY ? r_->elements : 0;
}

RedisReply RedisReply::at(size_t i) const {
  if (i >= size()) return RedisReply();
  return RedisReply(root_, r_->element[i]);
}

// --- Nodes and connections -----------------------------------------------------

struct RedisCluster::Connection {
  redisContext* ctx = nullptr;
  ~Connection() {
    if (ctx != nullptr) redisFree(ctx);
  }
};

struct RedisCluster::Node {
  std::string host;
  int port = 0;
  std::mutex mu;
  std::vector<std::unique_ptr<Connection>> idle;  // guarded by mu
  int64_t down_until_ms = 0;                      // guarded by mu
};

// A command on its way: where it goes and what came back.
struct RedisCluster::Pending {
  const RedisCommand* cmd = nullptr;
  std::optional<Result<RedisReply>> result;
  // After an ASK: the node to ask, once.
  int32_t ask_node = -1;
};

RedisCluster::RedisCluster(const RedisClusterOptions& options)
    : options_(options), slots_(kSlots, -1) {}

RedisCluster::~RedisCluster() = default;

Result<std::unique_ptr<RedisCluster>> RedisCluster::Connect(const RedisClusterOptions& options) {
  if (options.seeds.empty()) return Status::InvalidArgument("redis cluster: no seed node given");
  if (options.connect_timeout_ms <= 0 || options.command_timeout_ms <= 0 ||
      options.max_redirects < 1) {
    return Status::InvalidArgument("redis cluster: timeouts must be > 0 ms and max_redirects >= 1");
  }
  std::unique_ptr<RedisCluster> c(new RedisCluster(options));
  {
    std::lock_guard<std::mutex> lock(c->mu_);
    for (const std::string& s : options.seeds) {
      std::string host;
      int port = 0;
      KVTIER_RETURN_IF_ERROR(ParseHostPort(s, &host, &port, "redis cluster seed"));
      c->NodeIndexLocked(host, port);
    }
  }
  KVTIER_RETURN_IF_ERROR(c->Refresh());
  std::lock_guard<std::mutex> lock(c->mu_);
  const auto uncovered = std::count(c->slots_.begin(), c->slots_.end(), -1);
  if (uncovered > 0) {
    return Status::Unavailable("redis cluster: " + std::to_string(uncovered) +
                               " of 16384 slots have no master (is the cluster created?)");
  }
  return c;
}

size_t RedisCluster::NodeIndexLocked(const std::string& host, int port) {
  for (size_t i = 0; i < nodes_.size(); ++i) {
    if (nodes_[i]->host == host && nodes_[i]->port == port) return i;
  }
  auto n = std::make_unique<Node>();
  n->host = host;
  n->port = port;
  nodes_.push_back(std::move(n));
  return nodes_.size() - 1;
}

std::unique_ptr<RedisCluster::Connection> RedisCluster::Acquire(size_t node, Status* error) {
  Node* n;
  {
    std::lock_guard<std::mutex> lock(mu_);
    n = nodes_[node].get();
  }
  {
    // A node that failed a moment ago is not asked, through a pooled
    // connection either: one that stopped answering keeps its sockets open,
    // and each would cost a whole command timeout.
    std::lock_guard<std::mutex> lock(n->mu);
    if (SteadyMs() < n->down_until_ms) {
      *error =
          Status::Unavailable("redis node " + HostPort(n->host, n->port) + " failed a moment ago");
      return nullptr;
    }
    if (!n->idle.empty()) {
      std::unique_ptr<Connection> c = std::move(n->idle.back());
      n->idle.pop_back();
      return c;
    }
  }
  auto c = std::make_unique<Connection>();
  c->ctx = redisConnectWithTimeout(n->host.c_str(), n->port, Tv(options_.connect_timeout_ms));
  {
    std::lock_guard<std::mutex> lock(stats_mu_);
    ++stats_.connects;
  }
  if (c->ctx == nullptr || c->ctx->err != 0 ||
      redisSetTimeout(c->ctx, Tv(options_.command_timeout_ms)) != REDIS_OK) {
    *error = Status::Unavailable("redis node " + HostPort(n->host, n->port) + ": " +
                                 (c->ctx == nullptr ? "cannot connect" : c->ctx->errstr));
    std::lock_guard<std::mutex> lock(n->mu);
    n->down_until_ms = SteadyMs() + kDownBackoffMs;
    return nullptr;
  }
  return c;
}

void RedisCluster::Release(size_t node, std::unique_ptr<Connection> c) {
  Node* n;
  {
    std::lock_guard<std::mutex> lock(mu_);
    n = nodes_[node].get();
  }
  std::lock_guard<std::mutex> lock(n->mu);
  if (n->idle.size() < options_.max_idle_per_node) n->idle.push_back(std::move(c));
}

// --- Slot map -------------------------------------------------------------------

Status RedisCluster::Refresh() {
  std::vector<size_t> order;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Masters of the current map first, then every other node known.
    std::vector<bool> seen(nodes_.size(), false);
    for (int32_t n : slots_) {
      if (n >= 0 && !seen[n]) {
        seen[n] = true;
        order.push_back(static_cast<size_t>(n));
      }
    }
    for (size_t i = 0; i < nodes_.size(); ++i) {
      if (!seen[i]) order.push_back(i);
    }
  }
  Status last = Status::Unavailable("redis cluster: no node to ask for the slot map");
  for (size_t n : order) {
    last = RefreshFrom(n);
    if (last.ok()) return last;
  }
  return last;
}

Status RedisCluster::RefreshFrom(size_t node) {
  Status err;
  std::unique_ptr<Connection> c = Acquire(node, &err);
  if (c == nullptr) return err;
  auto* raw = static_cast<redisReply*>(redisCommand(c->ctx, "CLUSTER SLOTS"));
  if (raw == nullptr) {
    Node* n;
    {
      std::lock_guard<std::mutex> lock(mu_);
      n = nodes_[node].get();
    }
    std::lock_guard<std::mutex> lock(n->mu);
    n->down_until_ms = SteadyMs() + kDownBackoffMs;
    return Status::Unavailable(std::string("redis cluster: CLUSTER SLOTS: ") + c->ctx->errstr);
  }
  std::shared_ptr<redisReply> root(raw, freeReplyObject);
  const RedisReply r(root, raw);
  if (r.type() != RedisReply::Type::kArray) {
    Release(node, std::move(c));
    return Status::Unavailable("redis cluster: CLUSTER SLOTS answered " + std::string(r.str()));
  }
  std::string asked_host;
  {
    std::lock_guard<std::mutex> lock(mu_);
    asked_host = nodes_[node]->host;
  }
  std::vector<int32_t> slots(kSlots, -1);
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < r.size(); ++i) {
      const RedisReply range = r.at(i);
      if (range.size() < 3 || range.at(0).type() != RedisReply::Type::kInteger ||
          range.at(1).type() != RedisReply::Type::kInteger || range.at(2).size() < 2) {
        continue;
      }
      const long long lo = range.at(0).integer(), hi = range.at(1).integer();
      const RedisReply master = range.at(2);
      std::string host(master.at(0).str());
      if (host.empty()) host = asked_host;  // a node that does not know its own address
      const int port = static_cast<int>(master.at(1).integer());
      if (lo < 0 || hi >= kSlots || lo > hi || port <= 0) continue;
      const int32_t idx = static_cast<int32_t>(NodeIndexLocked(host, port));
      for (long long s = lo; s <= hi; ++s) slots[s] = idx;
    }
    slots_ = std::move(slots);
    stale_ = false;
  }
  Release(node, std::move(c));
  std::lock_guard<std::mutex> lock(stats_mu_);
  ++stats_.refreshes;
  return Status::Ok();
}

std::vector<std::string> RedisCluster::Masters() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<bool> seen(nodes_.size(), false);
  std::vector<std::string> out;
  for (int32_t n : slots_) {
    if (n >= 0 && !seen[n]) {
      seen[n] = true;
      out.push_back(HostPort(nodes_[n]->host, nodes_[n]->port));
    }
  }
  return out;
}

std::string RedisCluster::MasterOf(std::string_view key) const {
  std::lock_guard<std::mutex> lock(mu_);
  const int32_t n = slots_[RedisKeySlot(key)];
  return n < 0 ? std::string() : HostPort(nodes_[n]->host, nodes_[n]->port);
}

RedisClusterStats RedisCluster::Stats() const {
  std::lock_guard<std::mutex> lock(stats_mu_);
  return stats_;
}

// --- Running commands -----------------------------------------------------------

std::vector<Result<RedisReply>> RedisCluster::Run(std::span<const RedisCommand> commands) {
  bool stale;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stale = stale_;
  }
  if (stale) (void)Refresh();
  std::vector<Pending> pending(commands.size());
  for (size_t i = 0; i < commands.size(); ++i) pending[i].cmd = &commands[i];
  uint64_t sent = 0, redirects = 0;
  for (int round = 0; round <= options_.max_redirects; ++round) {
    std::map<size_t, std::vector<Pending*>> by_node;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (Pending& p : pending) {
        if (p.result) continue;
        const int32_t n = p.ask_node >= 0 ? p.ask_node : slots_[RedisKeySlot(p.cmd->key)];
        if (n < 0) {
          p.result = Status::Unavailable(
              "redis cluster: slot " + std::to_string(RedisKeySlot(p.cmd->key)) + " has no master");
          continue;
        }
        by_node[static_cast<size_t>(n)].push_back(&p);
      }
    }
    if (by_node.empty()) break;
    std::vector<Exchange> exchanges;
    for (auto& [node, batch] : by_node) {
      for (Pending* p : batch) {
        for (std::string_view a : p->cmd->args) sent += a.size();
      }
      exchanges.push_back(Exchange{node, std::move(batch), nullptr});
    }
    RunExchanges(exchanges);
    // Redirections: another round for those.
    bool again = false;
    for (Pending& p : pending) {
      const bool asked = p.ask_node >= 0;
      p.ask_node = -1;
      if (!p.result || !p.result->ok() || p.result->value().type() != RedisReply::Type::kError) {
        continue;
      }
      const std::string_view err = p.result->value().str();
      int slot = 0, port = 0;
      std::string host;
      if (ParseRedirect(err, "MOVED", &slot, &host, &port)) {
        std::lock_guard<std::mutex> lock(mu_);
        slots_[slot] = static_cast<int32_t>(NodeIndexLocked(host, port));
        stale_ = true;  // a whole range probably moved: reload the map next time
      } else if (ParseRedirect(err, "ASK", &slot, &host, &port) && !asked) {
        std::lock_guard<std::mutex> lock(mu_);
        p.ask_node = static_cast<int32_t>(NodeIndexLocked(host, port));
      } else {
        continue;
      }
      p.result.reset();
      ++redirects;
      again = true;
    }
    if (!again) break;
  }
  std::vector<Result<RedisReply>> out;
  out.reserve(pending.size());
  uint64_t errors = 0, received = 0;
  for (Pending& p : pending) {
    if (!p.result) p.result = Status::Unavailable("redis cluster: too many redirections");
    if (p.result->ok() && p.result->value().type() == RedisReply::Type::kError) {
      const std::string_view e = p.result->value().str();
      const bool down = e.substr(0, 11) == "CLUSTERDOWN" || e.substr(0, 8) == "TRYAGAIN" ||
                        e.substr(0, 5) == "MOVED" || e.substr(0, 3) == "ASK" ||
                        e.substr(0, 7) == "LOADING";
      p.result = down ? Status::Unavailable("redis: " + std::string(e))
                      : Status::IOError("redis: " + std::string(e));
    }
    if (!p.result->ok()) {
      ++errors;
    } else {
      const RedisReply& r = p.result->value();
      received += r.str().size();
      for (size_t i = 0; i < r.size(); ++i) received += r.at(i).str().size();
    }
    out.push_back(std::move(*p.result));
  }
  std::lock_guard<std::mutex> lock(stats_mu_);
  stats_.commands += commands.size();
  stats_.redirects += redirects;
  stats_.errors += errors;
  stats_.bytes_sent += sent;
  stats_.bytes_received += received;
  return out;
}

void RedisCluster::FailExchange(Exchange* x, const Status& s, bool node_down) {
  for (Pending* p : x->batch) {
    if (!p->result) p->result = s;
  }
  x->connection.reset();  // dropped, not pooled: its stream is in an unknown state
  Node* n;
  {
    std::lock_guard<std::mutex> lock(mu_);
    n = nodes_[x->node].get();
    stale_ = true;  // a node that fails may have been replaced: reload the map
  }
  if (node_down) {
    // Its pooled connections go too (they would fail alike); new ones are
    // dialled once the back-off ends.
    std::vector<std::unique_ptr<Connection>> idle;
    std::lock_guard<std::mutex> lock(n->mu);
    n->down_until_ms = SteadyMs() + kDownBackoffMs;
    idle.swap(n->idle);
  }
}

bool RedisCluster::Send(Exchange* x) {
  Status err;
  x->connection = Acquire(x->node, &err);
  if (x->connection == nullptr) {
    FailExchange(x, err, /*node_down=*/false);  // Acquire marked it already
    return false;
  }
  redisContext* ctx = x->connection->ctx;
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (Pending* p : x->batch) {
    if (p->ask_node >= 0) redisAppendCommand(ctx, "ASKING");
    argv.clear();
    lens.clear();
    for (std::string_view a : p->cmd->args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    redisAppendCommandArgv(ctx, static_cast<int>(argv.size()), argv.data(), lens.data());
  }
  for (int done = 0; done == 0;) {
    if (redisBufferWrite(ctx, &done) != REDIS_OK) {
      FailExchange(x, IoError(x->node, ctx), /*node_down=*/true);
      return false;
    }
  }
  return true;
}

void RedisCluster::Receive(Exchange* x) {
  redisContext* ctx = x->connection->ctx;
  for (Pending* p : x->batch) {
    void* raw = nullptr;
    if (p->ask_node >= 0) {
      if (redisGetReply(ctx, &raw) != REDIS_OK) {
        FailExchange(x, IoError(x->node, ctx), /*node_down=*/true);
        return;
      }
      freeReplyObject(raw);
    }
    if (redisGetReply(ctx, &raw) != REDIS_OK || raw == nullptr) {
      FailExchange(x, IoError(x->node, ctx), /*node_down=*/true);
      return;
    }
    auto* r = static_cast<redisReply*>(raw);
    std::shared_ptr<redisReply> root(r, freeReplyObject);
    p->result = RedisReply(root, r);
  }
  Release(x->node, std::move(x->connection));
}

void RedisCluster::RunExchanges(std::span<Exchange> exchanges) {
  std::vector<bool> sent(exchanges.size());
  for (size_t i = 0; i < exchanges.size(); ++i) sent[i] = Send(&exchanges[i]);
  for (size_t i = 0; i < exchanges.size(); ++i) {
    if (sent[i]) Receive(&exchanges[i]);
  }
}

Status RedisCluster::IoError(size_t node, const redisContext* ctx) {
  std::string where;
  {
    std::lock_guard<std::mutex> lock(mu_);
    where = HostPort(nodes_[node]->host, nodes_[node]->port);
  }
  return Status::Unavailable("redis node " + where + ": " +
                             (ctx->errstr[0] != '\0' ? ctx->errstr : "I/O error"));
}

Result<RedisReply> RedisCluster::RunOn(const std::string& host_port,
                                       std::span<const std::string_view> args) {
  std::string host;
  int port = 0;
  KVTIER_RETURN_IF_ERROR(ParseHostPort(host_port, &host, &port, "redis node"));
  size_t node;
  {
    std::lock_guard<std::mutex> lock(mu_);
    node = NodeIndexLocked(host, port);
  }
  RedisCommand cmd{std::vector<std::string_view>(args.begin(), args.end()), {}};
  Pending p;
  p.cmd = &cmd;
  Exchange x{node, {&p}, nullptr};
  RunExchanges(std::span(&x, 1));
  if (p.result->ok() && p.result->value().type() == RedisReply::Type::kError) {
    return Status::IOError("redis: " + std::string(p.result->value().str()));
  }
  return std::move(*p.result);
}

}  // namespace kvtier
