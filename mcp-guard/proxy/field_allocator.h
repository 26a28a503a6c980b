#pragma once

#include <cstddef>
#include <new>
#include <type_traits>

#include "proxy/asio.h"

namespace perimeter::mcpguard {

// Beast's header containers allocate one block per field (the node, its name and its value) and
// one per method, target or reason string, and free them all when the message goes: some ten
// malloc/free pairs per exchange, which callgrind counted at about a tenth of the guard's
// instructions per request. These blocks are small and of a few sizes, so each thread keeps the
// freed ones in free lists by size (SmallBlockCache) and hands them out again: a pop instead of
// a malloc, a push instead of a free. Larger blocks (a long Authorization, say) go to operator new.
namespace small_blocks {

// `bytes` of memory aligned as operator new aligns it; from this thread's free lists when small.
void* allocate(std::size_t bytes);
// Gives back a block allocate(bytes) returned (on any thread) with the same `bytes`.
void deallocate(void* block, std::size_t bytes) noexcept;

}  // namespace small_blocks

// A stateless allocator over small_blocks, for Beast's basic_fields (GuardFields).
template <class T>
class FieldAllocator {
 public:
  static_assert(alignof(T) <= __STDCPP_DEFAULT_NEW_ALIGNMENT__);
  using value_type = T;
  using is_always_equal = std::true_type;
  using propagate_on_container_move_assignment = std::true_type;

  FieldAllocator() noexcept = default;
  template <class U>
  FieldAllocator(const FieldAllocator<U>& /*other*/) noexcept {}  // NOLINT: rebinding converts

  T* allocate(std::size_t n) { return static_cast<T*>(small_blocks::allocate(n * sizeof(T))); }
  void deallocate(T* block, std::size_t n) noexcept {
    small_blocks::deallocate(block, n * sizeof(T));
  }

  template <class U>
  bool operator==(const FieldAllocator<U>& /*other*/) const noexcept {
    return true;
  }
};

// The fields of every message the guard parses, forwards or answers with.
using GuardFields = http::basic_fields<FieldAllocator<char>>;

}  // namespace perimeter::mcpguard
