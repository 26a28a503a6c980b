#include "sim/session_follower.h"

#include <algorithm>
#include <sstream>

namespace perimeter::sim {
namespace {

// The first line of a result, cut so one tool call stays one line on a terminal.
std::string preview(const std::string& text) {
  std::string line = text.substr(0, text.find('\n'));
  const bool cut = line.size() > 60 || line.size() < text.size();
  if (line.size() > 60) line.resize(60);
  return "\"" + line + (cut ? "…" : "") + "\"";
}

std::string text_of(const nlohmann::json& value, const char* key) {
  if (!value.is_object()) return "";
  auto it = value.find(key);
  return it != value.end() && it->is_string() ? it->get<std::string>() : "";
}

}  // namespace

std::vector<std::string> SessionFollower::update(const nlohmann::json& snapshot) {
  std::vector<std::string> lines;
  if (!snapshot.is_object() || !snapshot.contains("data") || !snapshot["data"].is_array()) {
    lines.push_back("[follow] results snapshot without a `data` array; ignored: " +
                    snapshot.dump().substr(0, 200));
    return lines;
  }
  for (const auto& record : snapshot["data"]) {
    const std::string id = text_of(record, "session_id");
    if (id.empty() || !record.contains("steps") || !record["steps"].is_array()) continue;
    auto [it, inserted] = sessions_.try_emplace(id);
    Session& session = it->second;
    if (inserted) order_.push_back(id);
    session.scenario = text_of(record, "scenario");
    session.status = text_of(record, "status");
    session.steps = static_cast<int>(record["steps"].size());
    const auto& steps = record["steps"];
    for (const auto& step : steps) {
      const int index = step.value("index", -1);
      const auto& received = step.contains("received") ? step["received"] : nlohmann::json();
      if (index < 0 || !received.is_object() || session.reported_steps.count(index)) continue;
      session.reported_steps.insert(index);
      std::ostringstream line;
      line << "[tool] " << id << " " << session.scenario << " step " << (index + 1) << "/"
           << session.steps << " " << text_of(step, "tool") << " -> "
           << (received.value("is_error", false) ? "error " : "")
           << preview(text_of(received, "text"));
      if (!step.value("matched", false)) {
        line << "  NOT AS EXPECTED: " << text_of(step, "mismatch");
      }
      lines.push_back(line.str());
    }
    if (record.value("finished", false) && !session.finished) {
      session.finished = true;
      session.all_matched = record.value("all_matched", false);
      session.matched = static_cast<int>(std::count_if(
          steps.begin(), steps.end(), [](const auto& s) { return s.value("matched", false); }));
      for (const auto& step : steps) {
        if (!step.value("matched", false)) {
          session.mismatches.push_back("step " + std::to_string(step.value("index", -1) + 1) + " " +
                                       text_of(step, "tool") + ": " + text_of(step, "mismatch"));
        }
      }
      std::ostringstream line;
      line << "[session] " << id << " " << session.scenario << " finished (" << session.status
           << "): " << session.matched << "/" << session.steps << " results as scripted";
      if (!session.all_matched) line << "; NOT AS EXPECTED";
      lines.push_back(line.str());
    }
  }
  return lines;
}

size_t SessionFollower::sessions_finished() const {
  return static_cast<size_t>(std::count_if(
      sessions_.begin(), sessions_.end(), [](const auto& entry) { return entry.second.finished; }));
}

bool SessionFollower::all_matched() const {
  return !sessions_.empty() && std::all_of(sessions_.begin(), sessions_.end(), [](const auto& e) {
    return e.second.finished && e.second.all_matched;
  });
}

std::string SessionFollower::table() const {
  std::ostringstream out;
  char row[256];
  std::snprintf(row, sizeof(row), "%-28s %-16s %-11s %s\n", "SESSION", "SCENARIO", "STATUS",
                "RESULTS AS SCRIPTED");
  out << row;
  for (const auto& id : order_) {
    const Session& session = sessions_.at(id);
    const std::string results =
        session.finished ? std::to_string(session.matched) + "/" + std::to_string(session.steps)
                         : std::to_string(session.reported_steps.size()) + "/" +
                               std::to_string(session.steps) + " so far (not finished)";
    std::snprintf(row, sizeof(row), "%-28s %-16s %-11s %s\n", id.c_str(), session.scenario.c_str(),
                  session.status.c_str(), results.c_str());
    out << row;
    for (const auto& mismatch : session.mismatches) out << "    " << mismatch << "\n";
  }
  return out.str();
}

}  // namespace perimeter::sim
