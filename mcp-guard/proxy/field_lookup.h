#pragma once

#include <string_view>

#include "proxy/field_allocator.h"

namespace perimeter::mcpguard {

// Lookups of a known field in one pass over a message's fields, comparing the name's enum.
// Beast's own find(field), operator[](field), keep_alive(), chunked() and has_content_length()
// search its tree by the name's text, comparing case-insensitively at each node: a few hundred
// instructions each (callgrind) for messages that carry a handful of fields. Each answers as the
// Beast call named beside it; where several fields share the name, the first one counts.

// find(name): the first field so named, or nullptr.
const GuardFields::value_type* find_field(const GuardFields& fields, http::field name);

// operator[](name): its value, empty when absent.
std::string_view field_value(const GuardFields& fields, http::field name);

// has_content_length()
bool has_content_length_field(const GuardFields& fields);

// keep_alive() of a message of this HTTP version (10 or 11).
bool keeps_alive(const GuardFields& fields, unsigned version);

// chunked(): Transfer-Encoding's last coding is chunked.
bool is_chunked(const GuardFields& fields);

}  // namespace perimeter::mcpguard
