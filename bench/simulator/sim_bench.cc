// perimeter-sim under load, on this machine: 1,000 workers long-poll the work queue while 1,000
// sessions are enqueued; each worker acks its item, opens the session's SSE stream and keeps it
// open, then heartbeats its lease in a closed loop; finally 1,000 connections poll without
// blocking. Prints one JSON line per measurement and a human summary. Never asserts timings.
//
// usage: perimeter-sim-bench [--workers N] [--seconds S]   (PERIMETER_BIN_DIR locates
// perimeter-sim)
#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <functional>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "agentapi/sim_process.h"

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

namespace {

struct Samples {
  std::vector<double> latencies_ms;
  long errors = 0;
  void add(Clock::duration d) {
    latencies_ms.push_back(std::chrono::duration<double, std::milli>(d).count());
  }
  double percentile(double p) {
    if (latencies_ms.empty()) return 0;
    std::sort(latencies_ms.begin(), latencies_ms.end());
    const auto index = static_cast<std::size_t>(p * static_cast<double>(latencies_ms.size() - 1));
    return latencies_ms[index];
  }
};

// One keep-alive connection issuing requests one after another.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  using Done = std::function<void(int status, const std::string& body, Clock::duration latency)>;
  Connection(asio::io_context& io, tcp::endpoint endpoint) : socket_(io), endpoint_(endpoint) {}

  void request(http::verb verb, const std::string& target, const std::string& token, Done done) {
    auto message = std::make_shared<http::request<http::string_body>>(verb, target, 11);
    message->set(http::field::host, "127.0.0.1");
    message->set(http::field::authorization, "Bearer " + token);
    message->set("anthropic-beta", "managed-agents-2026-04-01");
    message->set("anthropic-version", "2023-06-01");
    message->set("Anthropic-Worker-ID", "bench");
    message->keep_alive(true);
    message->prepare_payload();
    const auto started = Clock::now();
    auto send = [self = shared_from_this(), message, started, done = std::move(done)]() mutable {
      http::async_write(self->socket_, *message,
                        [self, message, started, done = std::move(done)](beast::error_code ec,
                                                                         std::size_t) mutable {
                          if (ec) return done(0, ec.message(), Clock::now() - started);
                          self->response_ = {};
                          http::async_read(self->socket_, self->buffer_, self->response_,
                                           [self, started, done = std::move(done)](
                                               beast::error_code ec, std::size_t) {
                                             if (ec)
                                               return done(0, ec.message(), Clock::now() - started);
                                             done(self->response_.result_int(),
                                                  self->response_.body(), Clock::now() - started);
                                           });
                        });
    };
    if (socket_.is_open()) return send();
    socket_.async_connect(endpoint_, [send = std::move(send)](beast::error_code ec) mutable {
      if (!ec) send();
    });
  }

 private:
  tcp::socket socket_;
  tcp::endpoint endpoint_;
  beast::flat_buffer buffer_;
  http::response<http::string_body> response_;
};

// An open SSE stream; records the time to its first event and keeps reading.
class Stream : public std::enable_shared_from_this<Stream> {
 public:
  Stream(asio::io_context& io, tcp::endpoint endpoint) : socket_(io), endpoint_(endpoint) {}
  void open(const std::string& session_id, const std::string& token, Samples* first_event,
            int* open_streams) {
    request_ = "GET /v1/sessions/" + session_id +
               "/events/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
               "Authorization: Bearer " +
               token +
               "\r\nanthropic-beta: managed-agents-2026-04-01\r\nanthropic-version: "
               "2023-06-01\r\n\r\n";
    started_ = Clock::now();
    socket_.async_connect(
        endpoint_, [self = shared_from_this(), first_event, open_streams](beast::error_code ec) {
          if (ec) return;
          asio::async_write(self->socket_, asio::buffer(self->request_),
                            [self, first_event, open_streams](beast::error_code ec, std::size_t) {
                              if (!ec) self->read(first_event, open_streams);
                            });
        });
  }

 private:
  void read(Samples* first_event, int* open_streams) {
    socket_.async_read_some(
        asio::buffer(buffer_), [self = shared_from_this(), first_event, open_streams](
                                   beast::error_code ec, std::size_t n) {
          if (ec) {
            if (self->counted_) --*open_streams;
            return;
          }
          self->seen_.append(self->buffer_.data(), n);
          if (!self->counted_ && self->seen_.find("event: ") != std::string::npos) {
            self->counted_ = true;
            ++*open_streams;
            first_event->add(Clock::now() - self->started_);
            self->seen_.clear();
          }
          if (self->seen_.size() > 65536) self->seen_.clear();
          self->read(first_event, open_streams);
        });
  }

  tcp::socket socket_;
  tcp::endpoint endpoint_;
  std::string request_;
  std::string seen_;
  std::array<char, 8192> buffer_{};
  Clock::time_point started_;
  bool counted_ = false;
};

std::string base64url_token(const std::string& secret) {
  std::string text = secret;
  for (char& c : text) c = c == '-' ? '+' : c == '_' ? '/' : c;
  static const std::string kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string decoded;
  unsigned buffer = 0;
  int bits = 0;
  for (char c : text) {
    const auto value = kAlphabet.find(c);
    if (value == std::string::npos) break;
    buffer = (buffer << 6) | static_cast<unsigned>(value);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      decoded.push_back(static_cast<char>((buffer >> bits) & 0xFF));
    }
  }
  return json::parse(decoded)["sessions_token"];
}

void report(const std::string& name, Samples& samples, double seconds, int concurrency) {
  const double rate = static_cast<double>(samples.latencies_ms.size()) / seconds;
  const json line = {
      {"bench", "perimeter-sim"},           {"measure", name},
      {"concurrency", concurrency},         {"requests", samples.latencies_ms.size()},
      {"errors", samples.errors},           {"seconds", seconds},
      {"requests_per_second", rate},        {"p50_ms", samples.percentile(0.50)},
      {"p99_ms", samples.percentile(0.99)}, {"max_ms", samples.percentile(1.0)}};
  std::cout << line.dump() << std::endl;
}

}  // namespace

int main(int argc, char** argv) {
  int workers = 1000;
  double phase_seconds = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--workers") workers = std::max(1, std::atoi(argv[i + 1]));
    if (flag == "--seconds") phase_seconds = std::max(1.0, std::atof(argv[i + 1]));
  }
  // Two sockets per worker on each side: lift the soft descriptor limit to the hard one.
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
  try {
    perimeter::testing::SimProcess sim({"--log-level", "warn"});
    const std::string key = "bench-key";
    const auto created = perimeter::testing::http_call(
        sim.url(), "POST", "/admin/environments", json({{"name", "bench"}, {"key", key}}).dump());
    const std::string environment = created.json()["id"];
    const std::string work = "/v1/environments/" + environment + "/work";
    const tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"),
                                 static_cast<unsigned short>(sim.port()));
    const std::string scenario = R"({"scenario":{"name":"bench","terminate":false,"steps":[
      {"tool":"bash","input":{"command":"true"}}]}})";

    asio::io_context io(1);
    Samples empty_polls, claiming_polls, acks, first_events, heartbeats, nonblocking_polls;
    int open_streams = 0;
    int claimed = 0;
    bool polling = true;
    struct Held {
      std::shared_ptr<Connection> connection;
      std::string work_id;
      std::string token;
      std::string last = "NO_HEARTBEAT";
    };
    std::vector<Held> held(static_cast<std::size_t>(workers));
    std::vector<std::shared_ptr<Stream>> streams;

    // Phase 1: every worker long-polls; items arrive one by one through the admin API.
    std::function<void(int)> poll_loop = [&](int w) {
      auto& slot = held[static_cast<std::size_t>(w)];
      slot.connection->request(
          http::verb::get, work + "/poll?block_ms=999", key,
          [&, w](int status, const std::string& body, Clock::duration latency) {
            auto& slot = held[static_cast<std::size_t>(w)];
            if (status != 200) {
              ++empty_polls.errors;
              return;
            }
            if (body == "null") {
              empty_polls.add(latency);
              if (polling) poll_loop(w);
              return;
            }
            claiming_polls.add(latency);
            const json item = json::parse(body);
            slot.work_id = item["id"];
            slot.token = base64url_token(item["secret"]);
            const std::string session = item["data"]["id"];
            slot.connection->request(
                http::verb::post, work + "/" + slot.work_id + "/ack", key,
                [&, session](int status, const std::string&, Clock::duration latency) {
                  if (status != 200) ++acks.errors;
                  acks.add(latency);
                  auto stream = std::make_shared<Stream>(io, endpoint);
                  stream->open(session, key, &first_events, &open_streams);
                  streams.push_back(stream);
                  if (++claimed == workers) polling = false;
                });
          });
    };
    const auto phase1_started = Clock::now();
    for (int w = 0; w < workers; ++w) {
      held[static_cast<std::size_t>(w)].connection = std::make_shared<Connection>(io, endpoint);
      poll_loop(w);
    }
    std::thread producer([&] {
      for (int i = 0; i < workers; ++i) {
        perimeter::testing::http_call(sim.url(), "POST",
                                      "/admin/environments/" + environment + "/sessions", scenario);
      }
    });
    while (polling && Clock::now() - phase1_started < std::chrono::seconds(120)) {
      io.run_for(std::chrono::milliseconds(50));
    }
    producer.join();
    // Let the last streams deliver their first events.
    for (int i = 0; i < 100 && open_streams < workers; ++i)
      io.run_for(std::chrono::milliseconds(50));
    const double phase1_seconds =
        std::chrono::duration<double>(Clock::now() - phase1_started).count();

    // Phase 2: with every stream open, each worker heartbeats its lease in a closed loop.
    bool beating = true;
    std::function<void(int)> beat_loop = [&](int w) {
      auto& slot = held[static_cast<std::size_t>(w)];
      slot.connection->request(
          http::verb::post,
          work + "/" + slot.work_id + "/heartbeat?expected_last_heartbeat=" + slot.last, slot.token,
          [&, w](int status, const std::string& body, Clock::duration latency) {
            auto& slot = held[static_cast<std::size_t>(w)];
            if (status != 200) {
              ++heartbeats.errors;
              return;
            }
            heartbeats.add(latency);
            slot.last = json::parse(body)["last_heartbeat"];
            if (beating) beat_loop(w);
          });
    };
    const int streams_during_heartbeats = open_streams;
    const auto phase2_started = Clock::now();
    for (int w = 0; w < workers; ++w) {
      if (!held[static_cast<std::size_t>(w)].work_id.empty()) beat_loop(w);
    }
    io.run_for(std::chrono::duration_cast<std::chrono::nanoseconds>(
        std::chrono::duration<double>(phase_seconds)));
    beating = false;
    const double phase2_seconds =
        std::chrono::duration<double>(Clock::now() - phase2_started).count();
    io.run_for(std::chrono::milliseconds(500));  // drain the beats in flight

    // Phase 3: non-blocking polls of an empty queue, closed loop, same connections.
    bool nonblocking = true;
    std::function<void(int)> nb_loop = [&](int w) {
      held[static_cast<std::size_t>(w)].connection->request(
          http::verb::get, work + "/poll", key,
          [&, w](int status, const std::string&, Clock::duration latency) {
            if (status != 200) {
              ++nonblocking_polls.errors;
              return;
            }
            nonblocking_polls.add(latency);
            if (nonblocking) nb_loop(w);
          });
    };
    const auto phase3_started = Clock::now();
    for (int w = 0; w < workers; ++w) nb_loop(w);
    io.run_for(std::chrono::duration_cast<std::chrono::nanoseconds>(
        std::chrono::duration<double>(phase_seconds)));
    nonblocking = false;
    const double phase3_seconds =
        std::chrono::duration<double>(Clock::now() - phase3_started).count();

    report("long_poll_empty", empty_polls, phase1_seconds, workers);
    report("long_poll_claim", claiming_polls, phase1_seconds, workers);
    report("ack", acks, phase1_seconds, workers);
    report("sse_time_to_first_event", first_events, phase1_seconds, workers);
    report("heartbeat_with_open_streams", heartbeats, phase2_seconds, workers);
    report("poll_nonblocking", nonblocking_polls, phase3_seconds, workers);
    std::cout << json({{"bench", "perimeter-sim"},
                       {"measure", "open_sse_streams"},
                       {"value", streams_during_heartbeats}})
                     .dump()
              << std::endl;

    std::cout << "\nperimeter-sim, " << workers << " concurrent workers on "
              << std::thread::hardware_concurrency()
              << " cores (simulator: one event-loop thread)\n"
              << "  claim phase: " << claimed << " items claimed through long-polls in "
              << phase1_seconds << " s; " << streams_during_heartbeats << " SSE streams open\n"
              << "  claiming poll p99 " << claiming_polls.percentile(0.99)
              << " ms (includes the wait for work)\n"
              << "  SSE time to first event p99 " << first_events.percentile(0.99) << " ms\n"
              << "  heartbeat: " << heartbeats.latencies_ms.size() / phase2_seconds
              << " req/s, p50 " << heartbeats.percentile(0.5) << " ms, p99 "
              << heartbeats.percentile(0.99) << " ms, errors " << heartbeats.errors
              << " (with all streams open)\n"
              << "  non-blocking poll: " << nonblocking_polls.latencies_ms.size() / phase3_seconds
              << " req/s, p50 " << nonblocking_polls.percentile(0.5) << " ms, p99 "
              << nonblocking_polls.percentile(0.99) << " ms, errors " << nonblocking_polls.errors
              << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "perimeter-sim-bench: " << e.what() << "\n";
    return 1;
  }
}
