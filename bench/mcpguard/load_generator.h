#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <memory>
#include <string>
#include <vector>

namespace perimeter::bench {

// What one closed-loop phase measured: each request's latency (write of the request to the last
// byte of its reply), the replies that were not a 200 with a JSON-RPC result, and the wall time.
struct LoadPhase {
  std::vector<double> latencies_us;
  long errors = 0;
  long reconnects = 0;  // the server closed a connection after a reply (no error)
  double seconds = 0;
};

// `concurrency` persistent connections to `endpoint`, each sending `tools/call` POSTs to `path`
// one after the other (a closed loop), on the calling thread. The connections are opened in the
// constructor and kept across phases, so a warm-up phase leaves them warm.
class LoadGenerator {
 public:
  LoadGenerator(boost::asio::ip::tcp::endpoint endpoint, std::string path, int concurrency);
  ~LoadGenerator();
  LoadGenerator(const LoadGenerator&) = delete;
  LoadGenerator& operator=(const LoadGenerator&) = delete;

  // Sends `requests` requests in all over the connections and waits for every reply (throws
  // after 300 s, and when a connection fails; the object is then spent).
  LoadPhase run(int requests);

  struct Connection;

 private:
  boost::asio::io_context io_{1};
  std::vector<std::shared_ptr<Connection>> connections_;
};

// `count` SSE GET streams to `endpoint` (`Accept: text/event-stream`), opened at most `parallel`
// at a time; a stream counts as open once its 200 response headers have arrived. They stay open
// until this object is destroyed.
class IdleStreams {
 public:
  IdleStreams(boost::asio::ip::tcp::endpoint endpoint, const std::string& path, int count,
              int parallel = 64);
  ~IdleStreams();
  IdleStreams(const IdleStreams&) = delete;
  IdleStreams& operator=(const IdleStreams&) = delete;

  int open() const { return open_; }
  int failed() const { return failed_; }

  struct Stream;

 private:
  boost::asio::io_context io_{1};
  std::vector<std::shared_ptr<Stream>> streams_;
  int open_ = 0;
  int failed_ = 0;
};

}  // namespace perimeter::bench
