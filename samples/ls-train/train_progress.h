// Progress display of `ls-train train` on stderr: when stderr is a terminal, one line rewritten
// in place (\r) at most every 0.1 s; otherwise (a log file, a pipe) one line every
// --log-interval updates. Other messages go through message(), which clears the live line
// first so the two never mix.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace cli {

struct ProgressState {
  int64_t update = 0, total_updates = 0;  // total 0: unknown
  int64_t epoch = 0;
  double loss_bits = 0, nll_bits = 0;  // per target token over the last window, base 2
  double lr = 0;
  double tokens_per_second = 0;
  double elapsed_seconds = 0, eta_seconds = -1;  // eta < 0: unknown
  double loss_scale = 1;
  bool show_loss_scale = false;
};

class ProgressMeter {
 public:
  // enabled == false shows nothing (--quiet); message() still prints.
  ProgressMeter(bool enabled, int64_t log_interval);
  ~ProgressMeter();

  // After each update. `force` prints a line even off the interval (the last update).
  void update(const ProgressState& state, bool force = false);
  // A line of the log (no trailing newline needed), written to `out`.
  void message(FILE* out, const std::string& line);
  // Ends the live line, if any.
  void finish();

  bool is_tty() const { return tty_; }

 private:
  std::string format(const ProgressState& s) const;
  bool enabled_, tty_;
  int64_t log_interval_;
  bool live_ = false;  // a live line is on the terminal
  size_t live_width_ = 0;
  double last_draw_ = -1;
};

// "42s", "3:05", "1:02:03".
std::string format_duration(double seconds);

}  // namespace cli
