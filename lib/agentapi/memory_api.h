#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace perimeter::agentapi {

// One memory as the API lists it (`BetaManagedAgentsMemory`); `content` only in the full view.
struct Memory {
  std::string id;
  std::string path;
  std::string content_sha256;
  std::optional<std::string> content;
  std::string type;  // "memory", or "memory_prefix" for a rollup (which has only `path`)
};

struct MemoryPage {
  std::vector<Memory> data;
  std::optional<std::string> next_page;
};

// The memory store calls a runner makes (`/v1/memory_stores/{id}/memories`, beta
// `agent-memory-2026-07-22`), as the SDK's `beta.memoryStores.memories`. They take the item's
// sessions token: the API refuses the environment key. Errors as AgentApi's (ApiError keeps the
// status and body).
class MemoryApi {
 public:
  virtual ~MemoryApi() = default;
  // One page; `view` is "basic" (no content) or "full".
  virtual MemoryPage list_memories(const std::string& store_id, const std::string& view, int limit,
                                   const std::string& page) = 0;
  virtual Memory retrieve_memory(const std::string& store_id, const std::string& memory_id,
                                 const std::string& view) = 0;
  virtual Memory create_memory(const std::string& store_id, const std::string& path,
                               const std::string& content) = 0;
  // An update of the content with a `content_sha256` precondition.
  virtual Memory update_memory(const std::string& store_id, const std::string& memory_id,
                               const std::string& content,
                               const std::string& precondition_sha256) = 0;
  virtual void delete_memory(const std::string& store_id, const std::string& memory_id,
                             const std::string& expected_content_sha256) = 0;
};

}  // namespace perimeter::agentapi
