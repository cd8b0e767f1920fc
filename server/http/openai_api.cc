// Placeholder: the OpenAi dialect's routes (docs/http-api.md). Being written.
#include "server/http/http_dialect.h"

namespace kvtier::http {

void AddOpenAiRoutes(httplib::Server& server, Services& s) {
  (void)server;
  (void)s;
}

}  // namespace kvtier::http
