#include "agentapi/cpprest_transport.h"

#include <cpprest/http_client.h>

#include <algorithm>
#include <thread>

#include "agentapi/api_error.h"

namespace perimeter::agentapi {
namespace {

using web::http::client::http_client;

// Splits "http://host:port/path?q" into "http://host:port" and "/path?q".
void split_url(const std::string& url, std::string* base, std::string* rest) {
  const std::size_t scheme = url.find("://");
  const std::size_t path = url.find('/', scheme == std::string::npos ? 0 : scheme + 3);
  *base = path == std::string::npos ? url : url.substr(0, path);
  *rest = path == std::string::npos ? "/" : url.substr(path);
}

web::http::http_request build(const HttpRequest& request, const std::string& rest) {
  web::http::http_request message(request.method);
  message.set_request_uri(rest);
  for (const auto& [name, value] : request.headers) message.headers().add(name, value);
  if (!request.body.empty()) {
    std::string content_type = "application/json";
    for (const auto& [name, value] : request.headers) {
      std::string lower = name;
      std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
      if (lower == "content-type") content_type = value;
    }
    message.set_body(request.body, content_type);
  }
  return message;
}

HttpResponse convert_head(const web::http::http_response& response) {
  HttpResponse out;
  out.status = response.status_code();
  for (const auto& [name, value] : response.headers()) {
    std::string lower = name;
    std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
    out.headers.emplace_back(lower, value);
  }
  return out;
}

}  // namespace

CpprestTransport::CpprestTransport() = default;
CpprestTransport::~CpprestTransport() = default;

http_client& CpprestTransport::client_for(const std::string& base,
                                          std::chrono::milliseconds timeout) {
  std::lock_guard lock(mutex_);
  auto& slot = clients_[{base, timeout.count()}];
  if (!slot) {
    web::http::client::http_client_config config;
    config.set_timeout(timeout);
    slot = std::make_unique<http_client>(base, config);
  }
  return *slot;
}

HttpResponse CpprestTransport::send(const HttpRequest& request) {
  std::string base;
  std::string rest;
  split_url(request.url, &base, &rest);
  try {
    web::http::http_response response =
        client_for(base, request.timeout).request(build(request, rest)).get();
    HttpResponse out = convert_head(response);
    out.body = response.extract_utf8string(true).get();
    return out;
  } catch (const web::http::http_exception& e) {
    throw TransportError(request.method + " " + base + rest + ": " + e.what());
  } catch (const std::exception& e) {
    throw TransportError(request.method + " " + base + rest + ": " + e.what());
  }
}

HttpResponse CpprestTransport::stream(const HttpRequest& request,
                                      const std::function<bool(std::string_view)>& on_chunk,
                                      const std::atomic<bool>& cancel) {
  std::string base;
  std::string rest;
  split_url(request.url, &base, &rest);
  pplx::cancellation_token_source cancellation;
  // The body read blocks until bytes arrive; a watcher turns the caller's flag into a cancel.
  std::atomic<bool> done{false};
  std::thread watcher([&] {
    while (!done.load()) {
      if (cancel.load()) {
        cancellation.cancel();
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  struct JoinOnExit {
    std::atomic<bool>& done;
    std::thread& thread;
    ~JoinOnExit() {
      done = true;
      thread.join();
    }
  } join{done, watcher};
  try {
    web::http::http_response response = client_for(base, request.timeout)
                                            .request(build(request, rest), cancellation.get_token())
                                            .get();
    HttpResponse out = convert_head(response);
    if (out.status < 200 || out.status >= 300) {
      out.body = response.extract_utf8string(true).get();
      return out;
    }
    auto body = response.body().streambuf();
    std::string chunk;
    while (!cancel.load()) {
      // One byte waits for data to arrive; then everything already buffered is taken at once.
      std::char_traits<char>::int_type first;
      try {
        first = body.bumpc().get();
      } catch (const std::exception& e) {
        // The head arrived, then the connection broke: the caller resumes from its last event.
        if (cancel.load()) break;
        out.truncated = true;
        out.truncation_reason = e.what();
        break;
      }
      if (first == std::char_traits<char>::eof()) break;
      chunk.assign(1, static_cast<char>(first));
      const std::size_t available = body.in_avail();
      if (available > 0) {
        std::string more(available, '\0');
        const std::size_t got = body.getn(reinterpret_cast<uint8_t*>(more.data()), available).get();
        chunk.append(more, 0, got);
      }
      if (!on_chunk(chunk)) break;
    }
    return out;
  } catch (const pplx::task_canceled&) {
    return HttpResponse{200, {}, {}, false, {}};
  } catch (const std::exception& e) {
    if (cancel.load()) return HttpResponse{200, {}, {}, false, {}};
    throw TransportError(request.method + " " + base + rest + ": " + e.what());
  }
}

}  // namespace perimeter::agentapi
