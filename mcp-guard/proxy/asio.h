#pragma once

// Boost.Asio and Beast as the proxy uses them, in one place.
#include <chrono>
#include <utility>

// clang-format off: after <utility>, as Boost.Asio's headers use std::exchange without it.
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
// clang-format on

namespace perimeter::mcpguard {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

// A session's I/O objects name their io_context's executor type (each session runs on one
// io_context, driven by one thread): handlers then skip any_io_executor's type erasure.
using IoExecutor = asio::io_context::executor_type;
using TcpSocket = tcp::socket::rebind_executor<IoExecutor>::other;
using SteadyTimer =
    asio::basic_waitable_timer<std::chrono::steady_clock,
                               asio::wait_traits<std::chrono::steady_clock>, IoExecutor>;

}  // namespace perimeter::mcpguard
