#pragma once

// Boost.Asio and Beast as the proxy uses them, in one place.
#include <utility>

// clang-format off: after <utility>, as Boost.Asio's headers use std::exchange without it.
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
// clang-format on

namespace perimeter::mcpguard {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

}  // namespace perimeter::mcpguard
