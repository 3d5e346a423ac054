#include "data/bleu.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "data/data_error.h"
#include "data/utf8.h"

namespace ls_sample {
namespace {

bool is_python_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 ||
         cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
         cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

// Python's str.split() with no argument.
std::vector<std::string> split_whitespace(const std::string& text) {
  std::vector<std::string> words;
  std::string current;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t length = 0;
    const uint32_t cp = utf8_decode_at(text, pos, length);
    if (is_python_space(cp)) {
      if (!current.empty()) words.push_back(std::move(current));
      current.clear();
    } else {
      current.append(text, pos, length);
    }
    pos += length;
  }
  if (!current.empty()) words.push_back(std::move(current));
  return words;
}

// Python's str.rstrip() with no argument.
std::string rstrip(const std::string& text) {
  size_t end = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t length = 0;
    const uint32_t cp = utf8_decode_at(text, pos, length);
    pos += length;
    if (!is_python_space(cp)) end = pos;
  }
  return text.substr(0, end);
}

void replace_all(std::string& text, const std::string& from, const std::string& to) {
  std::string out;
  size_t start = 0;
  while (true) {
    const size_t at = text.find(from, start);
    if (at == std::string::npos) break;
    out.append(text, start, at - start);
    out += to;
    start = at + from.size();
  }
  out.append(text, start, std::string::npos);
  text = std::move(out);
}

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_period_or_comma(char c) {
  return c == '.' || c == ',';
}

// Rule a's character class: { | } ~ [ \ ] ^ _ ` space..& ( ) * + : ; < = > ? @ /
bool is_split_symbol(char c) {
  return (c >= '{' && c <= '~') || (c >= '[' && c <= '`') || (c >= ' ' && c <= '&') ||
         (c >= '(' && c <= '+') || (c >= ':' && c <= '@') || c == '/';
}

// One left-to-right scan replacing non-overlapping matches of a two-character pattern
// (first, second) by prefix + first + middle + second + suffix.
template <typename First, typename Second>
std::string substitute_pairs(const std::string& text, First first, Second second,
                             const char* before_first, const char* between, const char* after) {
  std::string out;
  out.reserve(text.size() + text.size() / 4);
  size_t i = 0;
  while (i < text.size()) {
    if (i + 1 < text.size() && first(text[i]) && second(text[i + 1])) {
      out += before_first;
      out.push_back(text[i]);
      out += between;
      out.push_back(text[i + 1]);
      out += after;
      i += 2;
    } else {
      out.push_back(text[i++]);
    }
  }
  return out;
}

using NgramCounts = std::map<std::vector<std::string>, size_t>;

NgramCounts count_ngrams(const std::vector<std::string>& words, size_t n) {
  NgramCounts counts;
  for (size_t i = 0; i + n <= words.size(); ++i) {
    ++counts[std::vector<std::string>(words.begin() + i, words.begin() + i + n)];
  }
  return counts;
}

}  // namespace

std::string tokenize_13a(const std::string& input) {
  std::string line = input;
  replace_all(line, "<skipped>", "");
  replace_all(line, "-\n", "");
  replace_all(line, "\n", " ");
  if (line.find('&') != std::string::npos) {
    replace_all(line, "&quot;", "\"");
    replace_all(line, "&amp;", "&");
    replace_all(line, "&lt;", "<");
    replace_all(line, "&gt;", ">");
  }
  line = " " + line + " ";

  std::string spaced;
  spaced.reserve(line.size() * 2);
  for (const char c : line) {
    if (is_split_symbol(c)) {
      spaced.push_back(' ');
      spaced.push_back(c);
      spaced.push_back(' ');
    } else {
      spaced.push_back(c);
    }
  }
  const auto not_digit = [](char c) { return !is_digit(c); };
  const auto dash = [](char c) { return c == '-'; };
  spaced = substitute_pairs(spaced, not_digit, is_period_or_comma, "", " ", " ");
  spaced = substitute_pairs(spaced, is_period_or_comma, not_digit, " ", " ", "");
  spaced = substitute_pairs(spaced, is_digit, dash, "", " ", " ");

  std::string out;
  for (const std::string& word : split_whitespace(spaced)) {
    if (!out.empty()) out.push_back(' ');
    out += word;
  }
  return out;
}

BleuScore corpus_bleu(const std::vector<std::string>& hypotheses,
                      const std::vector<std::string>& references) {
  if (hypotheses.size() != references.size()) {
    throw DataError("corpus_bleu: " + std::to_string(hypotheses.size()) + " hypotheses but " +
                    std::to_string(references.size()) + " references");
  }
  BleuScore result;
  for (size_t s = 0; s < hypotheses.size(); ++s) {
    const std::vector<std::string> hyp = split_whitespace(tokenize_13a(rstrip(hypotheses[s])));
    const std::vector<std::string> ref = split_whitespace(tokenize_13a(rstrip(references[s])));
    result.sys_len += hyp.size();
    result.ref_len += ref.size();
    for (size_t n = 1; n <= 4; ++n) {
      const NgramCounts hyp_counts = count_ngrams(hyp, n);
      const NgramCounts ref_counts = count_ngrams(ref, n);
      for (const auto& [gram, count] : hyp_counts) {
        result.total[n - 1] += count;
        const auto found = ref_counts.find(gram);
        if (found != ref_counts.end()) result.correct[n - 1] += std::min(count, found->second);
      }
    }
  }

  if (result.sys_len < result.ref_len) {
    result.brevity_penalty =
        result.sys_len > 0 ? std::exp(1.0 - static_cast<double>(result.ref_len) / result.sys_len)
                           : 0.0;
  } else {
    result.brevity_penalty = 1.0;
  }
  if (std::all_of(result.correct.begin(), result.correct.end(), [](size_t c) { return c == 0; }))
    return result;  // score 0, precisions 0

  double smooth = 1.0;
  for (size_t n = 0; n < 4; ++n) {
    if (result.total[n] == 0) break;
    if (result.correct[n] == 0) {
      smooth *= 2.0;
      result.precisions[n] = 100.0 / (smooth * result.total[n]);
    } else {
      result.precisions[n] = 100.0 * result.correct[n] / result.total[n];
    }
  }
  double log_sum = 0;
  for (const double p : result.precisions) {
    if (p <= 0) return result;  // log(0): sacreBLEU's score underflows to exactly 0
    log_sum += std::log(p);
  }
  result.score = result.brevity_penalty * std::exp(log_sum / 4.0);
  return result;
}

}  // namespace ls_sample
