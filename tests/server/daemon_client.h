// A client of the kvtierd a test started: its address, an API key (empty:
// none, the daemon is open) and a deadline per call that only guards the
// suite against a hung daemon.
#pragma once

#include <memory>
#include <string>

#include "proto/client.h"
#include "tests/server/daemon_process.h"

namespace kvtier::testing {

inline std::unique_ptr<Client> ClientFor(const DaemonProcess& d, const std::string& api_key = "",
                                         bool own_connection = false) {
  ClientOptions o;
  o.own_connection = own_connection;
  o.address = d.address();
  o.api_key = api_key;
  o.timeout_ms = 120'000;
  return std::make_unique<Client>(o);
}

// The port the daemon's HTTP API bound (started with --http-listen host:0,
// which no other process can take between choosing and binding), as its
// Health reports it; 0 when it serves none or does not answer.
inline int HttpPortOf(const DaemonProcess& d, const std::string& api_key = "") {
  Result<v1::HealthResponse> h = ClientFor(d, api_key)->Health();
  if (!h.ok() || h->http_listen().empty()) return 0;
  return std::stoi(h->http_listen().substr(h->http_listen().rfind(':') + 1));
}

}  // namespace kvtier::testing
