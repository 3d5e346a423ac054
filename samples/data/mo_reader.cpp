#include "data/mo_reader.h"

#include "data/data_error.h"
#include "data/file_io.h"

namespace ls_sample {
namespace {

constexpr uint32_t kMoMagic = 0x950412deu;
constexpr size_t kHeaderBytes = 28;  // magic, revision, N, O, T, S, H

class MoParser {
 public:
  MoParser(const std::string& bytes, const std::string& name) : bytes_(bytes), name_(name) {}

  [[noreturn]] void fail(const std::string& what) const {
    throw DataError("read .mo '" + name_ + "': " + what);
  }

  uint32_t word_at(uint64_t offset, const char* what) const {
    if (offset + 4 > bytes_.size()) {
      fail(std::string(what) + " at offset " + std::to_string(offset) +
           " lies beyond the end of the file (" + std::to_string(bytes_.size()) + " bytes)");
    }
    const auto* p = reinterpret_cast<const unsigned char*>(bytes_.data() + offset);
    if (big_endian_) {
      return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
    }
    return uint32_t(p[3]) << 24 | uint32_t(p[2]) << 16 | uint32_t(p[1]) << 8 | uint32_t(p[0]);
  }

  void read_header() {
    if (bytes_.size() < kHeaderBytes) {
      fail("truncated header: " + std::to_string(bytes_.size()) + " bytes, need " +
           std::to_string(kHeaderBytes));
    }
    big_endian_ = false;
    uint32_t magic = word_at(0, "magic");
    if (magic != kMoMagic) {
      big_endian_ = true;
      magic = word_at(0, "magic");
      if (magic != kMoMagic) fail("bad magic number (not a GNU .mo file)");
    }
    revision_ = word_at(4, "revision");
    if ((revision_ >> 16) > 1) {
      fail("unsupported file format revision " + std::to_string(revision_ >> 16) + "." +
           std::to_string(revision_ & 0xffff));
    }
    count_ = word_at(8, "string count");
    originals_ = word_at(12, "original table offset");
    translations_ = word_at(16, "translation table offset");
    const uint64_t hash_size = word_at(20, "hash table size");
    const uint64_t hash_offset = word_at(24, "hash table offset");
    check_table(originals_, "original string table");
    check_table(translations_, "translation string table");
    if (hash_size > 0 && hash_offset + hash_size * 4 > bytes_.size()) {
      fail("hash table (" + std::to_string(hash_size) + " entries at offset " +
           std::to_string(hash_offset) + ") extends beyond the end of the file (" +
           std::to_string(bytes_.size()) + " bytes)");
    }
  }

  void check_table(uint64_t offset, const char* what) const {
    if (offset + uint64_t(count_) * 8 > bytes_.size()) {
      fail(std::string(what) + " (" + std::to_string(count_) + " entries at offset " +
           std::to_string(offset) + ") extends beyond the end of the file (" +
           std::to_string(bytes_.size()) + " bytes)");
    }
  }

  // String i of the table at `table`, without its terminating NUL (which must be present).
  std::string string_at(uint64_t table, uint32_t i, const char* what) const {
    const uint64_t entry = table + uint64_t(i) * 8;
    const uint64_t length = word_at(entry, what);
    const uint64_t offset = word_at(entry + 4, what);
    if (offset + length + 1 > bytes_.size()) {
      fail(std::string(what) + " " + std::to_string(i) + " (" + std::to_string(length) +
           " bytes at offset " + std::to_string(offset) + ") extends beyond the end of the file (" +
           std::to_string(bytes_.size()) + " bytes)");
    }
    if (bytes_[offset + length] != '\0') {
      fail(std::string(what) + " " + std::to_string(i) + " at offset " + std::to_string(offset) +
           " is not NUL-terminated");
    }
    return bytes_.substr(offset, length);
  }

  MoCatalog parse(const MoReadOptions& options) {
    read_header();
    MoCatalog catalog;
    catalog.path = name_;
    catalog.big_endian = big_endian_;
    catalog.revision = revision_;
    for (uint32_t i = 0; i < count_; ++i) {
      std::string msgid = string_at(originals_, i, "original string");
      std::string msgstr = string_at(translations_, i, "translated string");
      if (msgid.empty()) {
        catalog.charset = charset_of_header(msgstr);
        continue;
      }
      if (msgid.find('\0') != std::string::npos) {
        ++catalog.skipped_plural;
        continue;
      }
      if (msgstr.empty()) {
        ++catalog.skipped_empty_translation;
        continue;
      }
      const size_t eot = msgid.find('\x04');
      if (eot != std::string::npos) {
        if (!options.keep_context_entries) {
          ++catalog.skipped_context;
          continue;
        }
        msgid.erase(0, eot + 1);
        ++catalog.stripped_context;
        if (msgid.empty()) continue;  // a context with no text carries no sentence
      }
      catalog.pairs.emplace_back(std::move(msgid), std::move(msgstr));
    }
    return catalog;
  }

  static std::string charset_of_header(const std::string& header) {
    const std::string key = "charset=";
    const size_t at = header.find(key);
    if (at == std::string::npos) return {};
    size_t end = at + key.size();
    while (end < header.size() && header[end] != '\n' && header[end] != ';' && header[end] != ' ' &&
           header[end] != '\r') {
      ++end;
    }
    return header.substr(at + key.size(), end - at - key.size());
  }

 private:
  const std::string& bytes_;
  const std::string& name_;
  bool big_endian_ = false;
  uint32_t revision_ = 0;
  uint32_t count_ = 0;
  uint64_t originals_ = 0;
  uint64_t translations_ = 0;
};

}  // namespace

MoCatalog parse_mo(const std::string& bytes, const std::string& name,
                   const MoReadOptions& options) {
  return MoParser(bytes, name).parse(options);
}

MoCatalog read_mo_file(const std::string& path, const MoReadOptions& options) {
  return parse_mo(read_whole_file(path), path, options);
}

}  // namespace ls_sample
