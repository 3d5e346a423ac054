#include "data/file_io.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "data/data_error.h"

namespace ls_sample {

std::string read_whole_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw DataError("read_whole_file: cannot open '" + path + "': " + std::strerror(errno));
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) throw DataError("read_whole_file: error while reading '" + path + "'");
  return buffer.str();
}

}  // namespace ls_sample
