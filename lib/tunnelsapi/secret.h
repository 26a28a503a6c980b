#pragma once

#include <ostream>
#include <string>
#include <utility>

namespace perimeter::tunnelsapi {

// A credential (a tunnel token, an access token, a ServiceAccount assertion). It prints as
// "<redacted>" (gtest, logs built with <<), has no JSON conversion, so it cannot be put into a
// log line's fields by accident, and is read only through expose(), which names the intent.
class Secret {
 public:
  Secret() = default;
  explicit Secret(std::string value) : value_(std::move(value)) {}

  const std::string& expose() const { return value_; }
  bool empty() const { return value_.empty(); }
  bool operator==(const Secret& other) const = default;

 private:
  std::string value_;
};

inline std::ostream& operator<<(std::ostream& out, const Secret& secret) {
  return out << (secret.empty() ? "<empty>" : "<redacted>");
}

}  // namespace perimeter::tunnelsapi
