#include "train_progress.h"

#include <unistd.h>

#include <chrono>
#include <cmath>

namespace cli {

namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string format_rate(double tokens_per_second) {
  char buf[32];
  if (tokens_per_second >= 1e6)
    std::snprintf(buf, sizeof(buf), "%.2fM", tokens_per_second / 1e6);
  else if (tokens_per_second >= 1e3)
    std::snprintf(buf, sizeof(buf), "%.1fk", tokens_per_second / 1e3);
  else
    std::snprintf(buf, sizeof(buf), "%.0f", tokens_per_second);
  return buf;
}

}  // namespace

std::string format_duration(double seconds) {
  if (!(seconds >= 0)) return "?";
  long s = std::lround(seconds);
  char buf[32];
  if (s < 60)
    std::snprintf(buf, sizeof(buf), "%lds", s);
  else if (s < 3600)
    std::snprintf(buf, sizeof(buf), "%ld:%02ld", s / 60, s % 60);
  else
    std::snprintf(buf, sizeof(buf), "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  return buf;
}

ProgressMeter::ProgressMeter(bool enabled, int64_t log_interval)
    : enabled_(enabled), tty_(isatty(fileno(stderr)) == 1), log_interval_(log_interval) {}

ProgressMeter::~ProgressMeter() {
  finish();
}

std::string ProgressMeter::format(const ProgressState& s) const {
  char buf[320];
  std::string total = s.total_updates > 0 ? "/" + std::to_string(s.total_updates) : "";
  int n = std::snprintf(buf, sizeof(buf),
                        "epoch %lld | update %lld%s | loss %.3f | nll %.3f | ppl %.2f | lr %.3g | "
                        "%s tok/s | %s",
                        static_cast<long long>(s.epoch), static_cast<long long>(s.update),
                        total.c_str(), s.loss_bits, s.nll_bits, std::exp2(s.nll_bits), s.lr,
                        format_rate(s.tokens_per_second).c_str(),
                        format_duration(s.elapsed_seconds).c_str());
  std::string line(buf, n > 0 ? static_cast<size_t>(n) : 0);
  if (s.show_loss_scale) {
    std::snprintf(buf, sizeof(buf), " | scale %g", s.loss_scale);
    line += buf;
  }
  if (s.eta_seconds >= 0) line += " | ETA " + format_duration(s.eta_seconds);
  return line;
}

void ProgressMeter::update(const ProgressState& state, bool force) {
  if (!enabled_) return;
  if (tty_) {
    double now = now_seconds();
    if (!force && last_draw_ >= 0 && now - last_draw_ < 0.1) return;
    last_draw_ = now;
    std::string line = format(state);
    size_t width = line.size();
    if (width < live_width_) line.append(live_width_ - width, ' ');
    std::fprintf(stderr, "\r%s", line.c_str());
    std::fflush(stderr);
    live_ = true;
    live_width_ = width;
  } else if (force || state.update % log_interval_ == 0) {
    std::fprintf(stderr, "%s\n", format(state).c_str());
    std::fflush(stderr);
  }
}

void ProgressMeter::message(FILE* out, const std::string& line) {
  if (live_) {
    // Wipe the live line; the next update() redraws it below the message.
    std::fprintf(stderr, "\r%*s\r", static_cast<int>(live_width_), "");
    std::fflush(stderr);
    live_ = false;
    live_width_ = 0;
  }
  std::fprintf(out, "%s\n", line.c_str());
  std::fflush(out);
}

void ProgressMeter::finish() {
  if (live_) {
    std::fprintf(stderr, "\n");
    std::fflush(stderr);
    live_ = false;
    live_width_ = 0;
  }
}

}  // namespace cli
