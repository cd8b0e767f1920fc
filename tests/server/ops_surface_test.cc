// The operations surface generic tools expect of a real kvtierd (issue 18
// item 8): the standard gRPC health service (grpc.health.v1.Health) and
// server reflection, both without an API key, and health NOT_SERVING while
// the daemon drains; the Prometheus series counted in tokens per tier and
// model, and gRPC calls by method and status. The standard services are
// called raw (grpc::GenericStub with hand-encoded messages) since Debian
// ships no generated C++ for their protos: a generic client sees the same.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "tests/server/daemon_client.h"
#include "tests/server/daemon_process.h"

namespace kvtier {
namespace {

using testing::AsBytes;
using testing::ClientFor;
using testing::DaemonProcess;
using testing::TempDir;

constexpr char kAliceKey[] = "alice-key-0123456789";

// One protobuf field: a length-delimited field `number` holding `bytes`
// (strings and messages are encoded alike).
std::string LengthDelimited(int number, const std::string& bytes) {
  std::string out(1, static_cast<char>((number << 3) | 2));
  out += static_cast<char>(bytes.size());  // every value here is under 128 bytes
  return out + bytes;
}

grpc::ByteBuffer ToBuffer(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

std::string FromBuffer(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!buffer.Dump(&slices).ok()) return out;
  for (const grpc::Slice& s : slices)
    out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

// Waits for the one operation in flight on `cq`; whether it succeeded.
bool Await(grpc::CompletionQueue* cq) {
  void* tag = nullptr;
  bool ok = false;
  return cq->Next(&tag, &ok) && ok;
}

// The raw answer of a unary call: its status and message bytes.
struct RawAnswer {
  grpc::Status status;
  std::string bytes;
};

RawAnswer UnaryRaw(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                   const std::string& request) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  grpc::CompletionQueue cq;
  const grpc::ByteBuffer in = ToBuffer(request);
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> call =
      stub.PrepareUnaryCall(&ctx, method, in, &cq);
  call->StartCall();
  grpc::ByteBuffer out;
  RawAnswer a;
  call->Finish(&out, &a.status, reinterpret_cast<void*>(1));
  EXPECT_TRUE(Await(&cq));
  if (a.status.ok()) a.bytes = FromBuffer(out);
  return a;
}

// grpc.health.v1.Health/Check for `service`: the ServingStatus (1 SERVING,
// 2 NOT_SERVING), or nothing when the call failed (with its status in *failed).
std::optional<int> HealthCheck(const std::shared_ptr<grpc::Channel>& channel,
                               const std::string& service, grpc::Status* failed = nullptr) {
  const RawAnswer a = UnaryRaw(channel, "/grpc.health.v1.Health/Check",
                               service.empty() ? std::string() : LengthDelimited(1, service));
  if (!a.status.ok()) {
    if (failed != nullptr) *failed = a.status;
    return std::nullopt;
  }
  // HealthCheckResponse { ServingStatus status = 1; } — a zero (UNKNOWN) is
  // not encoded at all.
  if (a.bytes.empty()) return 0;
  EXPECT_EQ(a.bytes.size(), 2u);
  EXPECT_EQ(a.bytes[0], 0x08);
  return static_cast<int>(a.bytes[1]);
}

// The services that server reflection lists (one ListServices exchange on
// the ServerReflectionInfo stream), as the raw response bytes.
std::string ReflectionListServices(const std::shared_ptr<grpc::Channel>& channel,
                                   grpc::Status* status) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  grpc::CompletionQueue cq;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call =
      stub.PrepareCall(&ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  call->StartCall(reinterpret_cast<void*>(1));
  EXPECT_TRUE(Await(&cq));
  // ServerReflectionRequest { string list_services = 7; }
  call->Write(ToBuffer(LengthDelimited(7, "*")), reinterpret_cast<void*>(2));
  EXPECT_TRUE(Await(&cq));
  grpc::ByteBuffer response;
  call->Read(&response, reinterpret_cast<void*>(3));
  const bool read = Await(&cq);
  call->WritesDone(reinterpret_cast<void*>(4));
  EXPECT_TRUE(Await(&cq));
  call->Finish(status, reinterpret_cast<void*>(5));
  EXPECT_TRUE(Await(&cq));
  return read ? FromBuffer(response) : std::string();
}

std::shared_ptr<grpc::Channel> KeylessChannel(const DaemonProcess& d) {
  return grpc::CreateChannel(d.address(), grpc::InsecureChannelCredentials());
}

class OpsSurfaceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TempDir("ops_surface");
    std::filesystem::create_directories(dir_);
    std::ofstream(dir_ + "/keys") << kAliceKey << " alice admin\n";
    ASSERT_TRUE(daemon_.Start(dir_ + "/data", {"--api-keys", dir_ + "/keys", "--dram-bytes", "64M",
                                               "--flash-bytes", "64M", "--metrics-listen",
                                               "127.0.0.1:0", "--http-listen", "127.0.0.1:0"}));
  }
  void TearDown() override {
    daemon_.Stop(SIGTERM);
    std::filesystem::remove_all(dir_);
  }

  std::string Scrape() {
    auto health = ClientFor(daemon_, kAliceKey)->Health();
    EXPECT_TRUE(health.ok());
    if (!health.ok()) return "";
    const std::string m = health->metrics_listen();
    httplib::Client http(m.substr(0, m.rfind(':')), std::stoi(m.substr(m.rfind(':') + 1)));
    auto res = http.Get("/metrics");
    EXPECT_TRUE(res) << "no answer from " << m;
    return res ? res->body : "";
  }

  std::string dir_;
  DaemonProcess daemon_;
};

TEST_F(OpsSurfaceTest, HealthServesEveryServiceWithoutAKey) {
  auto channel = KeylessChannel(daemon_);
  for (const char* service : {"", "kvtier.v1.BlockStore", "kvtier.v1.ContextCache",
                              "kvtier.v1.Billing", "kvtier.v1.Admin"}) {
    EXPECT_EQ(HealthCheck(channel, service), 1) << "service \"" << service << "\"";
  }
  grpc::Status failed;
  EXPECT_EQ(HealthCheck(channel, "no.such.Service", &failed), std::nullopt);
  EXPECT_EQ(failed.error_code(), grpc::StatusCode::NOT_FOUND) << failed.error_message();
  // Our own services still want the key.
  v1::PutHeader h;
  h.add_token_ids(1);
  EXPECT_FALSE(ClientFor(daemon_)->Put(h, AsBytes("x")).ok());
}

TEST_F(OpsSurfaceTest, ReflectionListsOurServicesWithoutAKey) {
  grpc::Status status;
  const std::string services = ReflectionListServices(KeylessChannel(daemon_), &status);
  EXPECT_TRUE(status.ok()) << status.error_message();
  for (const char* service : {"kvtier.v1.BlockStore", "kvtier.v1.ContextCache", "kvtier.v1.Billing",
                              "kvtier.v1.Admin", "grpc.health.v1.Health"}) {
    EXPECT_NE(services.find(service), std::string::npos) << service;
  }
}

// While calls drain after SIGTERM, probes on an open connection see
// NOT_SERVING (the listener takes no new connections by then).
TEST_F(OpsSurfaceTest, HealthIsNotServingDuringTheDrain) {
  auto channel = KeylessChannel(daemon_);
  ASSERT_EQ(HealthCheck(channel, ""), 1);
  // A Put stream that sends nothing holds the drain open.
  grpc::GenericStub stub(channel);
  grpc::ClientContext put_ctx;
  put_ctx.AddMetadata("x-api-key", kAliceKey);
  grpc::CompletionQueue cq;
  auto put = stub.PrepareCall(&put_ctx, "/kvtier.v1.BlockStore/Put", &cq);
  put->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(Await(&cq));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the handler is running
  ASSERT_EQ(kill(daemon_.pid(), SIGTERM), 0);
  std::optional<int> status;
  for (int i = 0; i < 40 && status != 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    status = HealthCheck(channel, "");
  }
  EXPECT_EQ(status, 2);
  EXPECT_EQ(HealthCheck(channel, "kvtier.v1.BlockStore"), 2);
  put_ctx.TryCancel();
  grpc::Status put_status;
  put->Finish(&put_status, reinterpret_cast<void*>(2));
  void* tag = nullptr;
  bool ok = false;
  cq.Next(&tag, &ok);
  EXPECT_EQ(daemon_.Stop(SIGTERM), 0);
}

// The sum of a family's samples whose labels include `label` (every tier,
// wherever the placement put the blocks).
double SumOf(const std::string& text, const std::string& family, const std::string& label) {
  double sum = 0;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(family + "{", 0) != 0 || line.find(label) == std::string::npos) continue;
    sum += std::stod(line.substr(line.rfind(' ') + 1));
  }
  return sum;
}

// The labelled series after a block Put and Get, then a Generate run twice.
TEST_F(OpsSurfaceTest, MetricsCountTokensPerTierAndCallsPerMethod) {
  auto client = ClientFor(daemon_, kAliceKey);
  v1::PutHeader h;
  for (int i = 0; i < 64; ++i) h.add_token_ids(i + 1);
  auto put = client->Put(h, AsBytes(std::string(8192, 'k')));
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  const std::optional<BlockKey> key = BlockKey::FromBytes(put->block().key());
  ASSERT_TRUE(key.has_value());
  ASSERT_TRUE(client->Get(*key).ok());
  const std::string model = "model_name=\"tiny-8k\"";
  std::string m = Scrape();
  const std::string tier = "{tier=\"" + put->block().tier() + "\"," + model + "} ";
  EXPECT_NE(m.find("kvtier_cache_read_bytes_total" + tier + "8192\n"), std::string::npos) << m;
  EXPECT_NE(m.find("kvtier_cache_read_blocks_by_tier_total" + tier + "1\n"), std::string::npos);
  EXPECT_NE(m.find("kvtier_cache_read_tokens_total" + tier + "64\n"), std::string::npos);
  EXPECT_EQ(SumOf(m, "kvtier_cache_read_bytes_total", model), 8192);

  v1::GenerateRequest g;
  for (int i = 1; i <= 200; ++i) g.add_token_ids(i % 500 + 1);
  g.set_max_tokens(3);
  g.set_ignore_eos(true);
  ASSERT_TRUE(client->Generate(g).ok());
  auto again = client->Generate(g);  // the second reads the first's blocks
  ASSERT_TRUE(again.ok());
  ASSERT_GT(again->usage().cache_read_input_tokens(), 0u);

  m = Scrape();
  EXPECT_GT(SumOf(m, "kvtier_cache_hit_tokens_total", model), 0) << m;
  EXPECT_GT(SumOf(m, "kvtier_prompt_tokens_total", "source=\"cache\""), 0) << m;
  EXPECT_GT(SumOf(m, "kvtier_prompt_tokens_total", "source=\"computed\""), 0) << m;
  EXPECT_GT(SumOf(m, "kvtier_generation_tokens_total", model), 0) << m;
  for (const std::string& series :
       {"kvtier_cache_evictions_total{tier=\"dram\"," + model + ",reason=\"expired\"} 0\n",
        "kvtier_cache_expirations_total{ttl=\"5m\"," + model + "} 0\n",
        std::string("kvtier_generate_queue_seconds_count 2\n"),
        std::string("kvtier_grpc_requests_total{service=\"kvtier.v1.ContextCache\","
                    "method=\"Generate\",code=\"OK\"} 2\n"),
        std::string("kvtier_grpc_requests_total{service=\"kvtier.v1.BlockStore\","
                    "method=\"Put\",code=\"OK\"} 1\n"),
        std::string("kvtier_grpc_requests_total{service=\"kvtier.v1.BlockStore\","
                    "method=\"Get\",code=\"OK\"} 1\n")}) {
    EXPECT_NE(m.find(series), std::string::npos) << series << "\n" << m;
  }
}

std::string ReadSource(const std::string& path) {
  std::ifstream in(std::string(KVTIER_SOURCE_DIR) + "/" + path);
  EXPECT_TRUE(in) << "cannot read " << path;
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The metric families a Prometheus text exposition declares (# TYPE lines).
std::set<std::string> FamiliesOf(const std::string& exposition) {
  std::set<std::string> out;
  std::istringstream lines(exposition);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("# TYPE ", 0) != 0) continue;
    out.insert(line.substr(7, line.find(' ', 7) - 7));
  }
  return out;
}

// What a PromQL expression reads: each kvtier_* name (a family, or a
// histogram's _bucket/_sum/_count series) and each recorded name (level:metric:ops).
void NamesIn(const std::string& expr, std::set<std::string>* metrics,
             std::set<std::string>* recorded) {
  static const std::regex name(R"([A-Za-z_:][A-Za-z0-9_:]*)");
  for (auto it = std::sregex_iterator(expr.begin(), expr.end(), name); it != std::sregex_iterator();
       ++it) {
    std::string n = it->str();
    if (n.find(':') != std::string::npos) {
      if (n.find("kvtier") != std::string::npos) recorded->insert(n);
    } else if (n.rfind("kvtier_", 0) == 0) {
      for (const char* suffix : {"_bucket", "_sum", "_count"}) {
        const std::string s(suffix);
        if (n.size() > s.size() && n.compare(n.size() - s.size(), s.size(), s) == 0) {
          n.resize(n.size() - s.size());
          break;
        }
      }
      metrics->insert(n);
    }
  }
}

// Every string under the key "expr" anywhere in a Grafana dashboard.
void DashboardExprs(const nlohmann::json& j, std::vector<std::string>* out) {
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (it.key() == "expr" && it->is_string()) out->push_back(it->get<std::string>());
      DashboardExprs(*it, out);
    }
  } else if (j.is_array()) {
    for (const auto& e : j) DashboardExprs(e, out);
  }
}

// tools/monitoring's recording rules and Grafana dashboard read only series a
// real kvtierd exports (after one request through each API) and names the
// rules record, so renaming a metric without them fails here. promtool
// checks the rules' syntax and meaning (tools/monitoring/check.sh).
TEST_F(OpsSurfaceTest, MonitoringRulesAndDashboardReadOnlySeriesKvtierdExports) {
  auto client = ClientFor(daemon_, kAliceKey);
  v1::GenerateRequest g;
  for (int i = 1; i <= 100; ++i) g.add_token_ids(i);
  g.set_max_tokens(2);
  ASSERT_TRUE(client->Generate(g).ok());
  auto health = client->Health();
  ASSERT_TRUE(health.ok());
  const std::string h = health->http_listen();
  ASSERT_FALSE(h.empty());
  httplib::Client http(h.substr(0, h.rfind(':')), std::stoi(h.substr(h.rfind(':') + 1)));
  ASSERT_TRUE(http.Get("/health"));
  const std::set<std::string> exported = FamiliesOf(Scrape());

  const std::string rules = ReadSource("tools/monitoring/kvtier.rules.yml");
  std::set<std::string> recorded;  // the rules' record: names
  std::set<std::string> read_by_rules, recorded_read_by_rules;
  std::istringstream lines(rules);
  for (std::string line; std::getline(lines, line);) {
    static const std::regex record(R"(^\s*- record:\s*(\S+)\s*$)");
    std::smatch m;
    if (std::regex_match(line, m, record)) {
      recorded.insert(m[1]);
    } else if (line.find("summary:") == std::string::npos) {
      NamesIn(line, &read_by_rules, &recorded_read_by_rules);
    }
  }
  EXPECT_GE(recorded.size(), 10u);
  EXPECT_FALSE(read_by_rules.empty());
  for (const std::string& n : read_by_rules)
    EXPECT_TRUE(exported.count(n)) << "the rules read " << n << ", which kvtierd does not export";
  for (const std::string& n : recorded_read_by_rules)
    EXPECT_TRUE(recorded.count(n)) << "the rules read " << n << ", which no rule records";

  const nlohmann::json dashboard =
      nlohmann::json::parse(ReadSource("tools/monitoring/grafana-dashboard.json"), nullptr, false);
  ASSERT_FALSE(dashboard.is_discarded()) << "grafana-dashboard.json is not JSON";
  std::vector<std::string> exprs;
  DashboardExprs(dashboard, &exprs);
  EXPECT_GE(exprs.size(), 10u);
  std::set<std::string> read, recorded_read;
  for (const std::string& e : exprs) NamesIn(e, &read, &recorded_read);
  for (const std::string& n : read)
    EXPECT_TRUE(exported.count(n))
        << "the dashboard reads " << n << ", which kvtierd does not export";
  for (const std::string& n : recorded_read)
    EXPECT_TRUE(recorded.count(n)) << "the dashboard reads " << n << ", which no rule records";
}

}  // namespace
}  // namespace kvtier
