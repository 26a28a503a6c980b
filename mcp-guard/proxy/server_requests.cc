#include "proxy/server_requests.h"

namespace perimeter::mcpguard {

std::string PendingServerRequests::key(const std::optional<std::string>& session,
                                       const nlohmann::json& id) {
  // The session is a header value (no control characters), so "\n" separates unambiguously;
  // the id's JSON text keeps 1 and "1" apart.
  return (session ? "s" + *session : std::string("-")) + "\n" + id.dump();
}

void PendingServerRequests::add(const std::optional<std::string>& session, const nlohmann::json& id,
                                Entry entry, std::vector<Entry>* evicted) {
  std::string entry_key = key(session, id);
  std::lock_guard lock(mutex_);
  if (const auto found = index_.find(entry_key); found != index_.end()) {
    evicted->push_back(std::move(found->second->second));
    entries_.erase(found->second);
    index_.erase(found);
  }
  entries_.emplace_back(entry_key, std::move(entry));
  index_.emplace(std::move(entry_key), std::prev(entries_.end()));
  while (entries_.size() > capacity_) {
    index_.erase(entries_.front().first);
    evicted->push_back(std::move(entries_.front().second));
    entries_.pop_front();
  }
}

std::optional<PendingServerRequests::Entry> PendingServerRequests::take(
    const std::optional<std::string>& session, const nlohmann::json& id) {
  const std::string entry_key = key(session, id);
  std::lock_guard lock(mutex_);
  const auto found = index_.find(entry_key);
  if (found == index_.end()) return std::nullopt;
  Entry entry = std::move(found->second->second);
  entries_.erase(found->second);
  index_.erase(found);
  return entry;
}

void PendingServerRequests::take_older_than(std::chrono::steady_clock::time_point cutoff,
                                            std::vector<Entry>* expired) {
  std::lock_guard lock(mutex_);
  while (!entries_.empty() && entries_.front().second.sent < cutoff) {
    index_.erase(entries_.front().first);
    expired->push_back(std::move(entries_.front().second));
    entries_.pop_front();
  }
}

void PendingServerRequests::take_all(std::vector<Entry>* all) {
  std::lock_guard lock(mutex_);
  for (auto& [entry_key, entry] : entries_) all->push_back(std::move(entry));
  entries_.clear();
  index_.clear();
}

std::size_t PendingServerRequests::size() const {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

}  // namespace perimeter::mcpguard
