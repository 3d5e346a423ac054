// Trainer checkpoints. One file:
//   header  (magic "LSTRCKPT", format version, element size, flat element count, a hash of the
//            parameter layout (names, shapes, offsets), update count, dropout RNG state, loss
//            scale and its clean-step count, payload size)
//   payload (master weights, Adam m, Adam v: each flat, element size as in the header)
//   trailer (64-bit checksum of header and payload)
// Written to "<path>.tmp" then renamed over <path> (atomic on POSIX). Loading reads and checks
// the whole file before touching the trainer, so a bad file changes nothing.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include <unistd.h>

#include "runtime/error.h"
#include "runtime/trainer.h"

namespace ls {

namespace {

constexpr char kMagic[8] = {'L', 'S', 'T', 'R', 'C', 'K', 'P', 'T'};
constexpr uint32_t kFormatVersion = 1;

struct Header {
  char magic[8];
  uint32_t version;
  uint32_t elem_size;
  uint64_t elements;
  uint64_t layout_hash;
  int64_t num_updates;
  uint64_t dropout_stream;
  uint64_t dropout_seed;
  double loss_scale;
  int64_t good_steps;
  uint64_t payload_bytes;
};
static_assert(sizeof(Header) == 80, "checkpoint header layout");

uint64_t checksum(const unsigned char* p, size_t n, uint64_t h = 0xcbf29ce484222325ull) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = (h ^ w) * 0x100000001b3ull;
    h ^= h >> 29;
  }
  for (; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

uint64_t layout_hash(const ParamSet& params) {
  std::string s;
  for (const auto& e : params.entries()) {
    s += e.name;
    for (int64_t d : e.shape) s += ":" + std::to_string(d);
    s += "@" + std::to_string(e.ref.offset) + ";";
  }
  return checksum(reinterpret_cast<const unsigned char*>(s.data()), s.size());
}

}  // namespace

void Trainer::save(const std::string& path) const {
  LS_CHECK_ARG(!path.empty(), "checkpoint path is empty");
  LS_CHECK_ARG(micro_batches_ == 0, "cannot save in the middle of gradient accumulation ("
                                        << micro_batches_ << " of " << cfg_.update_freq
                                        << " micro-batches done): save after an update");
  Model& m = model_;
  TransformerGraph& g = m.graph();
  const size_t es = dtype_size(g.acc());
  const size_t n = g.params().total_elements();
  Header h{};
  std::memcpy(h.magic, kMagic, 8);
  h.version = kFormatVersion;
  h.elem_size = static_cast<uint32_t>(es);
  h.elements = n;
  h.layout_hash = layout_hash(g.params());
  const TrainState st = m.read_train_state();
  h.num_updates = st.num_updates;
  h.dropout_stream = st.dropout_stream;
  h.dropout_seed = m.dropout_seed();
  h.loss_scale = st.loss_scale;
  h.good_steps = st.good_steps;
  h.payload_bytes = 3 * n * es;
  std::vector<unsigned char> buf(sizeof(Header) + h.payload_bytes + 8);
  std::memcpy(buf.data(), &h, sizeof(h));
  unsigned char* p = buf.data() + sizeof(Header);
  m.context().activate();
  m.context().ops().to_host(p, m.buffer(g.master), n * es);
  m.context().ops().to_host(p + n * es, m.buffer(g.adam_m), n * es);
  m.context().ops().to_host(p + 2 * n * es, m.buffer(g.adam_v), n * es);
  uint64_t sum = checksum(buf.data(), buf.size() - 8);
  std::memcpy(buf.data() + buf.size() - 8, &sum, 8);

  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  LS_REQUIRE(f, LS_ERR_IO, "cannot open '" << tmp << "' for writing: " << std::strerror(errno));
  size_t written = std::fwrite(buf.data(), 1, buf.size(), f);
  bool ok = written == buf.size() && std::fflush(f) == 0 && fsync(fileno(f)) == 0;
  int err = errno;
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) {
    std::remove(tmp.c_str());
    LS_FAIL(LS_ERR_IO, "writing '" << tmp << "' failed: " << std::strerror(err));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    err = errno;
    std::remove(tmp.c_str());
    LS_FAIL(LS_ERR_IO, "renaming '" << tmp << "' to '" << path << "' failed: " << std::strerror(err));
  }
}

void Trainer::load(const std::string& path) {
  LS_CHECK_ARG(!path.empty(), "checkpoint path is empty");
  FILE* f = std::fopen(path.c_str(), "rb");
  LS_REQUIRE(f, LS_ERR_IO, "cannot open checkpoint '" << path << "': " << std::strerror(errno));
  std::vector<unsigned char> buf;
  unsigned char chunk[1 << 16];
  size_t got;
  while ((got = std::fread(chunk, 1, sizeof(chunk), f)) > 0) buf.insert(buf.end(), chunk, chunk + got);
  bool read_error = std::ferror(f) != 0;
  std::fclose(f);
  LS_REQUIRE(!read_error, LS_ERR_IO, "reading checkpoint '" << path << "' failed");

  auto corrupt = [&](const std::string& what) {
    LS_FAIL(LS_ERR_CORRUPT_DATA, "checkpoint '" << path << "': " << what);
  };
  if (buf.size() < sizeof(Header) + 8) corrupt("truncated (" + std::to_string(buf.size()) + " bytes)");
  Header h;
  std::memcpy(&h, buf.data(), sizeof(h));
  if (std::memcmp(h.magic, kMagic, 8) != 0) corrupt("not an ls_train checkpoint (bad magic)");
  if (h.version != kFormatVersion)
    corrupt("format version " + std::to_string(h.version) + " is not supported (expected " +
            std::to_string(kFormatVersion) + ")");
  if (buf.size() != sizeof(Header) + h.payload_bytes + 8)
    corrupt("truncated or padded: " + std::to_string(buf.size()) + " bytes, header says " +
            std::to_string(sizeof(Header) + h.payload_bytes + 8));
  uint64_t stored;
  std::memcpy(&stored, buf.data() + buf.size() - 8, 8);
  if (checksum(buf.data(), buf.size() - 8) != stored) corrupt("checksum mismatch (corrupt file)");

  Model& m = model_;
  TransformerGraph& g = m.graph();
  const size_t es = dtype_size(g.acc());
  const size_t n = g.params().total_elements();
  LS_REQUIRE(h.elem_size == es && h.elements == n && h.layout_hash == layout_hash(g.params()) &&
                 h.payload_bytes == 3 * n * es,
             LS_ERR_INVALID_ARGUMENT,
             "checkpoint '" << path << "' was written for a different model (" << h.elements
                            << " parameters of " << h.elem_size << " bytes; this model has " << n
                            << " of " << es << ", or other names/shapes)");
  if (!(h.loss_scale > 0) || h.num_updates < 0 || h.good_steps < 0) corrupt("invalid trainer state");

  // Everything checked: now apply.
  const unsigned char* p = buf.data() + sizeof(Header);
  m.context().activate();
  Ops& ops = m.context().ops();
  ops.from_host(m.buffer(g.master), p, n * es);
  ops.from_host(m.buffer(g.adam_m), p + n * es, n * es);
  ops.from_host(m.buffer(g.adam_v), p + 2 * n * es, n * es);
  m.refresh_working_copy();
  ops.zero(m.buffer(g.grad), n * es);
  ops.synchronize();
  m.set_dropout_seed(h.dropout_seed);
  TrainState st = m.read_train_state();
  st.dropout_stream = h.dropout_stream;
  st.num_updates = h.num_updates;
  st.loss_scale = h.loss_scale;
  st.good_steps = h.good_steps;
  st.stopped = kStopNone;  // a checkpoint is a state training can continue from
  st.bad_tokens = 0;
  install_state(st);
  micro_batches_ = 0;
}

}  // namespace ls
