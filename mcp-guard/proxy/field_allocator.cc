#include "proxy/field_allocator.h"

#include <array>
#include <cstdint>

namespace perimeter::mcpguard::small_blocks {
namespace {

constexpr std::size_t kClassBytes = 32;
constexpr std::size_t kClasses = 16;       // blocks of up to 512 bytes are kept
constexpr std::size_t kMostPerClass = 32;  // at most about 136 KiB a thread, all classes full

struct FreeBlock {
  FreeBlock* next;
};

// A thread's free lists, one per size class. Its blocks are released when the thread ends; a
// block freed after that (a message destroyed late in the thread's exit) goes to operator delete.
class SmallBlockCache {
 public:
  SmallBlockCache() = default;
  SmallBlockCache(const SmallBlockCache&) = delete;
  SmallBlockCache& operator=(const SmallBlockCache&) = delete;
  ~SmallBlockCache() {
    for (FreeBlock* head : heads_) {
      while (head != nullptr) {
        FreeBlock* next = head->next;
        ::operator delete(head);
        head = next;
      }
    }
    gone_ = true;
  }

  static bool gone() { return gone_; }

  void* take(std::size_t size_class) {
    FreeBlock* block = heads_[size_class];
    if (block == nullptr) return ::operator new((size_class + 1) * kClassBytes);
    heads_[size_class] = block->next;
    --counts_[size_class];
    return block;
  }

  void give_back(void* memory, std::size_t size_class) noexcept {
    if (counts_[size_class] >= kMostPerClass) {
      ::operator delete(memory);
      return;
    }
    auto* block = static_cast<FreeBlock*>(memory);
    block->next = heads_[size_class];
    heads_[size_class] = block;
    ++counts_[size_class];
  }

 private:
  std::array<FreeBlock*, kClasses> heads_{};
  std::array<std::uint8_t, kClasses> counts_{};
  static thread_local bool gone_;  // trivially destructible: readable after ~SmallBlockCache
};

thread_local bool SmallBlockCache::gone_ = false;

SmallBlockCache& cache() {
  thread_local SmallBlockCache blocks;
  return blocks;
}

// 1..32 bytes: class 0, 33..64: class 1, ...; kClasses and above are not kept.
std::size_t size_class(std::size_t bytes) {
  return bytes == 0 ? 0 : (bytes - 1) / kClassBytes;
}

}  // namespace

void* allocate(std::size_t bytes) {
  const std::size_t size_class_of = size_class(bytes);
  if (size_class_of >= kClasses || SmallBlockCache::gone()) return ::operator new(bytes);
  return cache().take(size_class_of);
}

void deallocate(void* block, std::size_t bytes) noexcept {
  const std::size_t size_class_of = size_class(bytes);
  if (size_class_of >= kClasses || SmallBlockCache::gone()) {
    ::operator delete(block);
    return;
  }
  cache().give_back(block, size_class_of);
}

}  // namespace perimeter::mcpguard::small_blocks
