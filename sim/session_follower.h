#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

namespace perimeter::sim {

// Turns successive snapshots of an environment's recorded results (`GET
// /admin/environments/{env}/results`) into the lines a person watching wants: one per tool result
// as it arrives, one per session as it finishes, and a final table. What `perimeter-sim follow`
// (and so `make run`) prints. Snapshots are the level; each line is printed once.
class SessionFollower {
 public:
  // New lines since the previous snapshot. A snapshot that is not the expected shape yields one
  // line saying so, and changes nothing.
  std::vector<std::string> update(const nlohmann::json& snapshot);

  size_t sessions_seen() const { return sessions_.size(); }
  size_t sessions_finished() const;
  // Every session finished and every one of them got exactly the results its script expects.
  bool all_matched() const;
  // One row per session: id, scenario, status, results as expected / steps, mismatches.
  std::string table() const;

 private:
  struct Session {
    std::string scenario;
    std::string status;
    bool finished = false;
    bool all_matched = false;
    int steps = 0;
    int matched = 0;
    std::set<int> reported_steps;
    std::vector<std::string> mismatches;
  };
  std::map<std::string, Session> sessions_;
  std::vector<std::string> order_;  // first seen first
};

}  // namespace perimeter::sim
