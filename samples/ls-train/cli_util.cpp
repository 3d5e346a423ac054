#include <cmath>
#include <cstdlib>

#include "cli.h"

namespace cli {

int Args::find(const std::string& name) const {
  for (size_t i = 0; i < items_.size(); ++i)
    if (items_[i] == name) return static_cast<int>(i);
  return -1;
}

bool Args::has(const std::string& name) const { return find(name) >= 0; }

bool Args::flag(const std::string& name) {
  int i = find(name);
  if (i < 0) return false;
  used_[i] = true;
  return true;
}

std::string Args::str(const std::string& name, const std::string& def) {
  int i = find(name);
  if (i < 0) return def;
  used_[i] = true;
  if (i + 1 >= static_cast<int>(items_.size())) throw UsageError(name + " needs a value");
  used_[i + 1] = true;
  return items_[i + 1];
}

int64_t Args::integer(const std::string& name, int64_t def) {
  if (!has(name)) return def;
  std::string v = str(name, "");
  char* end = nullptr;
  long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0') throw UsageError(name + " expects an integer, got '" + v + "'");
  return x;
}

double Args::number(const std::string& name, double def) {
  if (!has(name)) return def;
  std::string v = str(name, "");
  char* end = nullptr;
  double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || !std::isfinite(x))
    throw UsageError(name + " expects a number, got '" + v + "'");
  return x;
}

void Args::finish() const {
  for (size_t i = 0; i < items_.size(); ++i)
    if (!used_[i]) throw UsageError("unknown argument '" + items_[i] + "' (see --help)");
}

void Json::sep(const char* key) {
  if (!first_.empty()) {
    if (!first_.back()) out_ += ",";
    first_.back() = false;
  }
  if (key) {
    out_ += "\"";
    out_ += key;
    out_ += "\":";
  }
}

Json& Json::begin_object(const char* key) {
  sep(key);
  out_ += "{";
  first_.push_back(true);
  return *this;
}
Json& Json::end_object() {
  out_ += "}";
  first_.pop_back();
  return *this;
}
Json& Json::begin_array(const char* key) {
  sep(key);
  out_ += "[";
  first_.push_back(true);
  return *this;
}
Json& Json::end_array() {
  out_ += "]";
  first_.pop_back();
  return *this;
}
Json& Json::kv(const char* key, const std::string& v) {
  sep(key);
  out_ += "\"";
  for (char c : v) {
    switch (c) {
      case '"': out_ += "\\\""; break;
      case '\\': out_ += "\\\\"; break;
      case '\n': out_ += "\\n"; break;
      case '\t': out_ += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out_ += buf;
        } else {
          out_ += c;
        }
    }
  }
  out_ += "\"";
  return *this;
}
Json& Json::kv(const char* key, double v) {
  sep(key);
  if (!std::isfinite(v)) {
    out_ += "null";
  } else {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.6g", v);
    out_ += buf;
  }
  return *this;
}
Json& Json::kv(const char* key, int64_t v) {
  sep(key);
  out_ += std::to_string(v);
  return *this;
}
Json& Json::kv(const char* key, uint64_t v) {
  sep(key);
  out_ += std::to_string(v);
  return *this;
}
Json& Json::kv(const char* key, bool v) {
  sep(key);
  out_ += v ? "true" : "false";
  return *this;
}

std::string human_bytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), u == 0 ? "%.0f %s" : "%.2f %s", v, units[u]);
  return buf;
}

}  // namespace cli
