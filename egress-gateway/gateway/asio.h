#pragma once

// Boost.Asio as the gateway uses it (C++20 coroutines), in one place.
#include <chrono>
#include <utility>

// Boost 1.74 enables co_await for clang only with the Coroutines TS headers; clang's C++20
// coroutines with libstdc++'s <coroutine> are what GCC gets, so clang (clang-tidy, the fuzz
// builds) is told the same.
#if defined(__clang__) && defined(__cpp_impl_coroutine) && __cpp_impl_coroutine >= 201902 && \
    __has_include(<coroutine>) && !defined(BOOST_ASIO_HAS_CO_AWAIT)
#define BOOST_ASIO_HAS_CO_AWAIT 1
#define BOOST_ASIO_HAS_STD_COROUTINE 1
#endif

// clang-format off: after <utility>, as Boost.Asio's headers use std::exchange without it.
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
// clang-format on

namespace perimeter::egressgateway {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

}  // namespace perimeter::egressgateway
