#include "server/metrics.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <future>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "server/metrics_http.h"

namespace kvtier {
namespace {

TEST(MetricsTextTest, CounterAndGaugeWithoutLabels) {
  MetricsText m;
  m.Counter("kvtier_requests_total", "Requests served.", 42);
  m.Gauge("kvtier_queue_depth", "Requests waiting.", 3.5);
  EXPECT_EQ(m.Text(),
            "# HELP kvtier_requests_total Requests served.\n"
            "# TYPE kvtier_requests_total counter\n"
            "kvtier_requests_total 42\n"
            "# HELP kvtier_queue_depth Requests waiting.\n"
            "# TYPE kvtier_queue_depth gauge\n"
            "kvtier_queue_depth 3.5\n");
}

TEST(MetricsTextTest, EmptyBuilderWritesNothing) { EXPECT_EQ(MetricsText().Text(), ""); }

TEST(MetricsTextTest, HelpAndTypeOncePerFamilyWithSeveralLabelSets) {
  MetricsText m;
  m.Counter("kvtier_tier_hits_total", "Hits by tier.", 10, {{"tier", "dram"}});
  m.Counter("kvtier_tier_hits_total", "Hits by tier.", 4, {{"tier", "flash"}});
  m.Gauge("kvtier_tier_used_bytes", "Bytes held by tier.", 1024, {{"tier", "dram"}});
  // A family added again later is still written in one group, first place.
  m.Counter("kvtier_tier_hits_total", "Hits by tier.", 1, {{"tier", "rocks"}});
  m.Counter("kvtier_moved_bytes_total", "Bytes moved between tiers.", 7,
            {{"from", "dram"}, {"to", "flash"}});
  EXPECT_EQ(m.Text(),
            "# HELP kvtier_tier_hits_total Hits by tier.\n"
            "# TYPE kvtier_tier_hits_total counter\n"
            "kvtier_tier_hits_total{tier=\"dram\"} 10\n"
            "kvtier_tier_hits_total{tier=\"flash\"} 4\n"
            "kvtier_tier_hits_total{tier=\"rocks\"} 1\n"
            "# HELP kvtier_tier_used_bytes Bytes held by tier.\n"
            "# TYPE kvtier_tier_used_bytes gauge\n"
            "kvtier_tier_used_bytes{tier=\"dram\"} 1024\n"
            "# HELP kvtier_moved_bytes_total Bytes moved between tiers.\n"
            "# TYPE kvtier_moved_bytes_total counter\n"
            "kvtier_moved_bytes_total{from=\"dram\",to=\"flash\"} 7\n");
}

TEST(MetricsTextTest, EscapesLabelValuesAndHelp) {
  MetricsText m;
  m.Gauge("kvtier_cache_info", "Named caches.\nOne per \"name\", path C:\\x.", 1,
          {{"name", "a\"b\\c\nd"}});
  EXPECT_EQ(m.Text(),
            "# HELP kvtier_cache_info Named caches.\\nOne per \"name\", path C:\\\\x.\n"
            "# TYPE kvtier_cache_info gauge\n"
            "kvtier_cache_info{name=\"a\\\"b\\\\c\\nd\"} 1\n");
}

TEST(MetricsTextTest, OmitsHelpWhenEmpty) {
  MetricsText m;
  m.Counter("x_total", "", 1);
  EXPECT_EQ(m.Text(), "# TYPE x_total counter\nx_total 1\n");
}

TEST(MetricsTextTest, FormatsValues) {
  MetricsText m;
  m.Gauge("v", "", 0, {{"k", "zero"}});
  m.Gauge("v", "", -0.0, {{"k", "negzero"}});
  m.Gauge("v", "", 1e6, {{"k", "million"}});
  m.Gauge("v", "", 0.0005, {{"k", "small"}});
  m.Gauge("v", "", -2.25, {{"k", "neg"}});
  m.Gauge("v", "", 18446744073709551616.0, {{"k", "huge"}});  // 2^64
  m.Gauge("v", "", 1e300, {{"k", "vast"}});
  m.Gauge("v", "", 1e-9, {{"k", "tiny"}});
  m.Gauge("v", "", std::numeric_limits<double>::infinity(), {{"k", "inf"}});
  m.Gauge("v", "", -std::numeric_limits<double>::infinity(), {{"k", "ninf"}});
  m.Gauge("v", "", std::nan(""), {{"k", "nan"}});
  EXPECT_EQ(m.Text(),
            "# TYPE v gauge\n"
            "v{k=\"zero\"} 0\n"
            "v{k=\"negzero\"} 0\n"
            "v{k=\"million\"} 1000000\n"
            "v{k=\"small\"} 0.0005\n"
            "v{k=\"neg\"} -2.25\n"
            "v{k=\"huge\"} 18446744073709551616\n"
            "v{k=\"vast\"} 1e+300\n"
            "v{k=\"tiny\"} 1e-09\n"
            "v{k=\"inf\"} +Inf\n"
            "v{k=\"ninf\"} -Inf\n"
            "v{k=\"nan\"} NaN\n");
}

TEST(MetricsTextTest, HistogramWritesCumulativeBucketsSumAndCount) {
  MetricsText m;
  const std::vector<double> bounds = {0.1, 0.5, 1};
  const std::vector<uint64_t> counts = {2, 0, 3, 1};  // the last is above 1
  m.Histogram("kvtier_rpc_seconds", "RPC latency.", bounds, counts, 4.25, {{"rpc", "Get"}});
  m.Histogram("kvtier_rpc_seconds", "RPC latency.", bounds, std::vector<uint64_t>{0, 0, 0, 0}, 0,
              {{"rpc", "Put"}});
  EXPECT_EQ(m.Text(),
            "# HELP kvtier_rpc_seconds RPC latency.\n"
            "# TYPE kvtier_rpc_seconds histogram\n"
            "kvtier_rpc_seconds_bucket{rpc=\"Get\",le=\"0.1\"} 2\n"
            "kvtier_rpc_seconds_bucket{rpc=\"Get\",le=\"0.5\"} 2\n"
            "kvtier_rpc_seconds_bucket{rpc=\"Get\",le=\"1\"} 5\n"
            "kvtier_rpc_seconds_bucket{rpc=\"Get\",le=\"+Inf\"} 6\n"
            "kvtier_rpc_seconds_sum{rpc=\"Get\"} 4.25\n"
            "kvtier_rpc_seconds_count{rpc=\"Get\"} 6\n"
            "kvtier_rpc_seconds_bucket{rpc=\"Put\",le=\"0.1\"} 0\n"
            "kvtier_rpc_seconds_bucket{rpc=\"Put\",le=\"0.5\"} 0\n"
            "kvtier_rpc_seconds_bucket{rpc=\"Put\",le=\"1\"} 0\n"
            "kvtier_rpc_seconds_bucket{rpc=\"Put\",le=\"+Inf\"} 0\n"
            "kvtier_rpc_seconds_sum{rpc=\"Put\"} 0\n"
            "kvtier_rpc_seconds_count{rpc=\"Put\"} 0\n");
}

TEST(MetricsTextTest, HistogramWithoutLabels) {
  MetricsText m;
  m.Histogram("h", "", std::vector<double>{1}, std::vector<uint64_t>{1, 1}, 3);
  EXPECT_EQ(m.Text(),
            "# TYPE h histogram\n"
            "h_bucket{le=\"1\"} 1\n"
            "h_bucket{le=\"+Inf\"} 2\n"
            "h_sum 3\n"
            "h_count 2\n");
}

// A programming error: asserts in debug builds, skipped in release builds.
TEST(MetricsTextTest, InvalidNamesAreProgrammingErrors) {
#ifdef NDEBUG
  MetricsText m;
  m.Counter("9starts_with_digit", "", 1);
  m.Counter("has space", "", 1);
  m.Counter("", "", 1);
  m.Gauge("ok_name", "", 1, {{"bad-label", "v"}});
  m.Histogram("h", "", std::vector<double>{1}, std::vector<uint64_t>{1}, 0);  // one count short
  m.Histogram("h", "", std::vector<double>{2, 1}, std::vector<uint64_t>{0, 0, 0}, 0);
  m.Histogram("h", "", std::vector<double>{1}, std::vector<uint64_t>{0, 0}, 0, {{"le", "x"}});
  m.Counter("colons:are_ok", "", 1);
  m.Gauge("colons:are_ok", "", 2);  // the family is a counter
  EXPECT_EQ(m.Text(), "# TYPE colons:are_ok counter\ncolons:are_ok 1\n");
#else
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(MetricsText().Counter("has space", "", 1), "invalid Prometheus metric name");
  EXPECT_DEATH(MetricsText().Gauge("g", "", 1, {{"bad-label", "v"}}),
               "invalid Prometheus label name");
  EXPECT_DEATH(
      MetricsText().Histogram("h", "", std::vector<double>{1}, std::vector<uint64_t>{1}, 0),
      "histogram bounds");
#endif
}

TEST(LatencyHistogramTest, BoundsDoubleFromHalfAMillisecondToAMinute) {
  const auto bounds = LatencyHistogram::UpperBounds();
  ASSERT_EQ(bounds.size(), LatencyHistogram::kNumBounds);
  EXPECT_DOUBLE_EQ(bounds.front(), 0.0005);
  EXPECT_DOUBLE_EQ(bounds.back(), 65.536);
  for (size_t i = 1; i < bounds.size(); ++i) EXPECT_EQ(bounds[i], 2 * bounds[i - 1]);
}

TEST(LatencyHistogramTest, ObservationsLandInTheirBuckets) {
  LatencyHistogram h;
  h.Observe(0);             // bucket 0 (le 0.0005)
  h.Observe(-1);            // counts as 0: bucket 0
  h.Observe(0.0005);        // bounds are inclusive: bucket 0
  h.Observe(0.0006);        // bucket 1 (le 0.001)
  h.Observe(0.003);         // bucket 3 (le 0.004)
  h.Observe(1.0);           // bucket 11 (le 1.024)
  h.Observe(65.536);        // the last bound: bucket 17
  h.Observe(120);           // above every bound
  h.Observe(std::nan(""));  // ignored
  const HistogramSnapshot s = h.Snapshot();
  ASSERT_EQ(s.upper_bounds.size(), LatencyHistogram::kNumBounds);
  ASSERT_EQ(s.counts.size(), LatencyHistogram::kNumBounds + 1);
  std::vector<uint64_t> want(LatencyHistogram::kNumBounds + 1, 0);
  want[0] = 3;
  want[1] = 1;
  want[3] = 1;
  want[11] = 1;
  want[17] = 1;
  want[18] = 1;
  EXPECT_EQ(s.counts, want);
  EXPECT_EQ(s.count(), 8u);
  EXPECT_DOUBLE_EQ(s.sum, 0.0005 + 0.0006 + 0.003 + 1.0 + 65.536 + 120);
}

TEST(LatencyHistogramTest, ConcurrentObservationsAreAllCounted) {
  LatencyHistogram h;
  constexpr int kThreads = 4;
  constexpr int kPerThread = 10000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&h, t] {
      for (int i = 0; i < kPerThread; ++i) h.Observe(t == 0 ? 0.25 : 0.001);
    });
  }
  for (auto& t : threads) t.join();
  const HistogramSnapshot s = h.Snapshot();
  EXPECT_EQ(s.count(), uint64_t{kThreads * kPerThread});
  EXPECT_EQ(s.counts[1], uint64_t{(kThreads - 1) * kPerThread});  // le 0.001
  EXPECT_EQ(s.counts[9], uint64_t{kPerThread});                   // le 0.256
  EXPECT_NEAR(s.sum, kPerThread * 0.25 + (kThreads - 1) * kPerThread * 0.001, 1e-6);
}

TEST(LatencyHistogramTest, RendersThroughMetricsText) {
  LatencyHistogram h;
  h.Observe(0.0015);
  MetricsText m;
  m.Histogram("kvtier_generate_seconds", "Generate latency.", h.Snapshot());
  const std::string text = m.Text();
  EXPECT_NE(text.find("kvtier_generate_seconds_bucket{le=\"0.001\"} 0\n"), std::string::npos);
  EXPECT_NE(text.find("kvtier_generate_seconds_bucket{le=\"0.002\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("kvtier_generate_seconds_bucket{le=\"65.536\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("kvtier_generate_seconds_bucket{le=\"+Inf\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("kvtier_generate_seconds_count 1\n"), std::string::npos);
}

// --- MetricsHttpServer ---

MetricsHttpOptions LoopbackOptions(std::function<std::string()> render) {
  MetricsHttpOptions options;
  options.listen = "127.0.0.1:0";
  options.render = std::move(render);
  return options;
}

// A raw TCP connection to 127.0.0.1:port; -1 when refused.
int ConnectLoopback(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

TEST(MetricsHttpServerTest, ServesMetricsHealthzAndRefusesTheRest) {
  MetricsText m;
  m.Counter("kvtier_requests_total", "Requests served.", 3, {{"rpc", "Get"}});
  const std::string text = m.Text();
  auto server = MetricsHttpServer::Start(LoopbackOptions([&] { return std::string(text); }));
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->bound_port();
  ASSERT_GT(port, 0);

  httplib::Client client("127.0.0.1", port);
  auto res = client.Get("/metrics");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, text);
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/plain; version=0.0.4");

  auto head = client.Head("/metrics");
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->body, "");

  auto health = client.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(health->body, "ok");

  auto missing = client.Get("/nope");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);

  auto post = client.Post("/metrics", "x", "text/plain");
  ASSERT_TRUE(post);
  EXPECT_EQ(post->status, 405);
  EXPECT_EQ(post->get_header_value("Allow"), "GET, HEAD");

  auto del = client.Delete("/healthz");
  ASSERT_TRUE(del);
  EXPECT_EQ(del->status, 405);
}

TEST(MetricsHttpServerTest, RendersEachScrapeAfresh) {
  std::atomic<int> scrapes{0};
  auto server = MetricsHttpServer::Start(
      LoopbackOptions([&] { return "scrape " + std::to_string(++scrapes) + "\n"; }));
  ASSERT_TRUE(server.ok()) << server.status();
  httplib::Client client("127.0.0.1", (*server)->bound_port());
  for (int i = 1; i <= 3; ++i) {
    auto res = client.Get("/metrics");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->body, "scrape " + std::to_string(i) + "\n");
  }
}

TEST(MetricsHttpServerTest, RenderFailureAnswers500) {
  auto server = MetricsHttpServer::Start(
      LoopbackOptions([]() -> std::string { throw std::runtime_error("tier gone"); }));
  ASSERT_TRUE(server.ok()) << server.status();
  httplib::Client client("127.0.0.1", (*server)->bound_port());
  auto res = client.Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 500);
  EXPECT_NE(res->body.find("tier gone"), std::string::npos);
}

TEST(MetricsHttpServerTest, SecondServerOnTheSamePortFailsClearly) {
  auto first = MetricsHttpServer::Start(LoopbackOptions([] { return std::string(); }));
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string address = "127.0.0.1:" + std::to_string((*first)->bound_port());
  MetricsHttpOptions options = LoopbackOptions([] { return std::string(); });
  options.listen = address;
  auto second = MetricsHttpServer::Start(options);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(second.status().message().find(address), std::string::npos)
      << second.status().message();
  // The first still serves.
  httplib::Client client("127.0.0.1", (*first)->bound_port());
  auto res = client.Get("/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->body, "ok");
}

TEST(MetricsHttpServerTest, RejectsBadOptions) {
  MetricsHttpOptions no_render;
  no_render.listen = "127.0.0.1:0";
  EXPECT_EQ(MetricsHttpServer::Start(no_render).status().code(), StatusCode::kInvalidArgument);
  for (const char* listen :
       {"127.0.0.1", "127.0.0.1:", ":9464", "127.0.0.1:70000", "127.0.0.1:9x", "127.0.0.1:-1"}) {
    MetricsHttpOptions options = LoopbackOptions([] { return std::string(); });
    options.listen = listen;
    EXPECT_EQ(MetricsHttpServer::Start(options).status().code(), StatusCode::kInvalidArgument)
        << listen;
  }
  MetricsHttpOptions threads = LoopbackOptions([] { return std::string(); });
  threads.threads = 0;
  EXPECT_EQ(MetricsHttpServer::Start(threads).status().code(), StatusCode::kInvalidArgument);
  MetricsHttpOptions timeout = LoopbackOptions([] { return std::string(); });
  timeout.client_timeout_s = 0;
  EXPECT_EQ(MetricsHttpServer::Start(timeout).status().code(), StatusCode::kInvalidArgument);
}

TEST(MetricsHttpServerTest, ListensOnIpv6Loopback) {
  MetricsHttpOptions options = LoopbackOptions([] { return std::string("v6\n"); });
  options.listen = "[::1]:0";
  auto server = MetricsHttpServer::Start(options);
  if (!server.ok()) GTEST_SKIP() << "no IPv6 loopback: " << server.status();
  httplib::Client client("::1", (*server)->bound_port());
  auto res = client.Get("/metrics");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->body, "v6\n");
}

TEST(MetricsHttpServerTest, StopIsPromptAndIdempotent) {
  auto server = MetricsHttpServer::Start(LoopbackOptions([] { return std::string("m\n"); }));
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->bound_port();
  {
    httplib::Client client("127.0.0.1", port);
    auto res = client.Get("/metrics");
    ASSERT_TRUE(res);
  }
  // A client that connects and sends nothing holds a worker until
  // client_timeout_s (1 s); Stop waits for it no longer than that. The bound
  // below only catches a hang, it does not time Stop.
  const int idle = ConnectLoopback(port);
  ASSERT_GE(idle, 0);
  auto stopped = std::async(std::launch::async, [&] { (*server)->Stop(); });
  ASSERT_EQ(stopped.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  close(idle);
  (*server)->Stop();                    // again: a no-op
  EXPECT_LT(ConnectLoopback(port), 0);  // nothing listens any more
  server->reset();                      // the destructor stops again
}

TEST(MetricsHttpServerTest, StopRightAfterStartReturns) {
  for (int i = 0; i < 20; ++i) {
    auto server = MetricsHttpServer::Start(LoopbackOptions([] { return std::string(); }));
    ASSERT_TRUE(server.ok()) << server.status();
  }  // each destructor stops its server
}

TEST(MetricsHttpServerTest, ClientHangingUpMidResponseDoesNotKillTheProcess) {
  MetricsHttpOptions options = LoopbackOptions([] { return std::string(16 << 20, 'x'); });
  options.threads = 1;  // so the next request is served only after this one is done
  auto server = MetricsHttpServer::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->bound_port();
  // httplib::Server's constructor ignores SIGPIPE process-wide; restore the
  // default so that a write racing the hang-up (httplib checks the peer before
  // each write) could only be survived by the server's own threads.
  auto old_handler = std::signal(SIGPIPE, SIG_DFL);

  const int fd = ConnectLoopback(port);
  ASSERT_GE(fd, 0);
  const std::string request = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  ASSERT_EQ(send(fd, request.data(), request.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(request.size()));
  // Read 256 KiB of the 16 MiB response, so the server is mid-body, then hang
  // up with the rest unread: the peer resets the connection.
  std::vector<char> buf(64 << 10);
  size_t got = 0;
  while (got < (256u << 10)) {
    const ssize_t n = recv(fd, buf.data(), buf.size(), 0);
    ASSERT_GT(n, 0);
    got += static_cast<size_t>(n);
  }
  close(fd);

  // The process lives on and the server answers the next request.
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(std::chrono::seconds(30));
  auto res = client.Get("/healthz");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->body, "ok");
  std::signal(SIGPIPE, old_handler);
}

}  // namespace
}  // namespace kvtier
