#include "operator/exposition.h"

#include <sstream>

namespace perimeter::testing {
namespace {

// Calls `visit(labels, value)` for each sample of `name`; `labels` is the text between the
// braces, empty when the sample has none.
template <typename Visit>
void for_each_sample(const std::string& exposition, const std::string& name, Visit visit) {
  std::istringstream lines(exposition);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(name, 0) != 0 || line.size() == name.size()) continue;
    const char next = line[name.size()];
    if (next != '{' && next != ' ') continue;  // another family sharing the prefix
    const auto close = next == '{' ? line.find('}', name.size()) : name.size();
    if (close == std::string::npos) continue;
    const std::string labels =
        next == '{' ? line.substr(name.size() + 1, close - name.size() - 1) : std::string();
    visit(labels, std::stod(line.substr(line.rfind(' ') + 1)));
  }
}

}  // namespace

double metric_sum(const std::string& exposition, const std::string& name) {
  double sum = 0;
  for_each_sample(exposition, name, [&](const std::string&, double value) { sum += value; });
  return sum;
}

std::map<std::string, double> metric_sums_by_label(const std::string& exposition,
                                                   const std::string& name,
                                                   const std::string& label) {
  std::map<std::string, double> sums;
  const std::string prefix = label + "=\"";
  for_each_sample(exposition, name, [&](const std::string& labels, double value) {
    // At the start of the label set or after a comma, so `code` does not match `status_code`.
    auto at = labels.rfind(prefix, 0) == 0 ? 0 : labels.find("," + prefix);
    if (at == std::string::npos) return;
    if (at != 0) ++at;
    const auto start = at + prefix.size();
    sums[labels.substr(start, labels.find('"', start) - start)] += value;
  });
  return sums;
}

}  // namespace perimeter::testing
