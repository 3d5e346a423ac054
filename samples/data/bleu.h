// Corpus BLEU computed as sacreBLEU 2.x computes it with its defaults (tokenize='13a',
// smooth_method='exp', lowercase=False, one reference per segment, n-grams 1..4).
//
// Per segment: the text is right-stripped of whitespace, then tokenised by tokenize_13a:
//   1. remove "<skipped>"; remove "-\n"; replace "\n" by " ";
//   2. if the line holds '&': replace "&quot;" -> '"', then "&amp;" -> '&', then "&lt;" -> '<',
//      then "&gt;" -> '>' (each over the whole line, in this order);
//   3. pad with one space on each side, then apply, each as one left-to-right scan of
//      non-overlapping matches (Python re.sub semantics):
//        a. every character of { | } ~ [ \ ] ^ _ ` space ! " # $ % & ( ) * + : ; < = > ? @ /
//           becomes " c ";
//        b. ([^0-9])([.,])  -> "\1 \2 "   (period/comma not preceded by a digit);
//        c. ([.,])([^0-9])  -> " \1 \2"   (period/comma not followed by a digit);
//        d. ([0-9])(-)      -> "\1 \2 "   (dash preceded by a digit);
//   4. split on whitespace as Python's str.split() does (ASCII whitespace, \x1c-\x1f, and the
//      Unicode spaces U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029, U+202F, U+205F,
//      U+3000) and join with single spaces.
// The scans work on UTF-8 bytes; since every pattern element that can match a non-ASCII
// character is "[^0-9]", this gives the same output as scanning code points.
//
// Statistics: correct[n] = clipped n-gram matches, total[n] = hypothesis n-grams, summed over
// the corpus; sys_len / ref_len = summed token counts. BP = 1 if sys_len >= ref_len, else
// exp(1 - ref_len / sys_len) (0 when sys_len == 0). If no n-gram of any order matches the
// score is 0. Otherwise p_n = 100 * correct / total; 'exp' smoothing: the k-th order with
// correct == 0 gets p_n = 100 / (2^k * total); an order with total == 0 (and all above it)
// keeps p_n = 0, which makes the score 0. score = BP * exp(mean(log p_n)), on 0..100.
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <vector>

namespace ls_sample {

struct BleuScore {
  double score = 0;                    // 0..100
  std::array<double, 4> precisions{};  // percent, after smoothing
  double brevity_penalty = 0;
  size_t sys_len = 0, ref_len = 0;           // tokens after 13a tokenisation
  std::array<size_t, 4> correct{}, total{};  // clipped matches / hypothesis n-grams
};

// The mteval-v13a tokenisation described above (without the right-strip).
std::string tokenize_13a(const std::string& line);

// Corpus BLEU of `hypotheses` against one reference each. Throws DataError when the counts
// differ.
BleuScore corpus_bleu(const std::vector<std::string>& hypotheses,
                      const std::vector<std::string>& references);

}  // namespace ls_sample
