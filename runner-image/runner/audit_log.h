#pragma once

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/audit_sink.h"
#include "core/clock.h"

namespace perimeter::runner {

// The runner's audit trail: one JSON line per tool call on stdout, written before the result is
// sent back to the API (docs/audit.md states every field). Apart from the operational log, which
// goes to stderr.

inline constexpr std::string_view kAuditType = "perimeter.audit.v1";

// How much of a call the line holds. `metadata` (the default): ids, tool, digest, decision,
// outcome, sizes. `full`: also the input and the output text, redacted.
enum class AuditLevel { kMetadata, kFull };
const char* to_string(AuditLevel level);
// "metadata" or "full"; nullopt for anything else.
std::optional<AuditLevel> parse_audit_level(std::string_view text);

// Who let the call run, or why it did not.
enum class AuditDecision {
  kAllowed,            // evaluated_permission allow (or none): run
  kAskedAndConfirmed,  // ask, then the user's tool_confirmation allowed it: run
  kDenied,             // evaluated_permission deny, or the user's confirmation refused: not run
  kNotOwned,           // not one of this runner's tools: left for its owner, not run here
  kAbandoned,          // held for confirmation when its session thread terminated: not run
};
const char* to_string(AuditDecision decision);

struct AuditRecord {
  std::string tool_use_id;
  std::string tool;
  std::string event_type;  // agent.tool_use or agent.custom_tool_use
  nlohmann::json input;    // as the API sent it; absent input is null
  AuditDecision decision = AuditDecision::kAllowed;
  std::string denied_by;  // "policy" or "user" for kDenied, otherwise empty
  // ok, error, timeout (bash), denied, not_executed
  std::string outcome;
  std::optional<int> exit_code;  // bash, when the command finished
  std::chrono::milliseconds duration{0};
  std::string output;  // the result text as sent back (blocks joined); empty when not run
};

// Where the lines go: stdout (core/audit_sink.h), or a test's recorder.
using perimeter::AuditSink;
using perimeter::StdoutAuditSink;

// Replaces known secrets and common credential shapes with "[REDACTED]" (patterns in
// docs/audit.md).
class Redactor {
 public:
  // `secrets`: exact values (the sessions token, the work secret, the environment key); empty
  // ones are ignored.
  explicit Redactor(std::vector<std::string> secrets);
  ~Redactor();
  Redactor(const Redactor&) = delete;
  Redactor& operator=(const Redactor&) = delete;

  std::string redact(std::string_view text) const;
  // Every string of `value`, keys included.
  nlohmann::json redact_json(const nlohmann::json& value) const;
  // The exact secrets only: what is applied to every line at every level.
  std::string remove_secrets(std::string_view text) const;

 private:
  struct Patterns;
  std::vector<std::string> secrets_;
  std::unique_ptr<Patterns> patterns_;
};

struct AuditIdentity {
  std::string session_id;
  std::string work_id;
  std::string environment_id;
};

class AuditLog {
 public:
  AuditLog(AuditSink& sink, AuditLevel level, AuditIdentity identity,
           std::vector<std::string> secrets, const Clock& clock);

  // Writes the call's one line.
  void record(const AuditRecord& record);
  // The line without writing it.
  std::string render(const AuditRecord& record) const;

  AuditLevel level() const { return level_; }

  // The canonical input: nlohmann's compact dump (keys sorted by byte, no whitespace, UTF-8).
  static std::string canonical_input(const nlohmann::json& input);
  // "sha256:" + lowercase hex of the canonical input.
  static std::string input_digest(const nlohmann::json& input);

 private:
  AuditSink& sink_;
  AuditLevel level_;
  AuditIdentity identity_;
  Redactor redactor_;
  const Clock& clock_;
};

}  // namespace perimeter::runner
