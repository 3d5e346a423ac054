// Whole-file reading for the sample data pipeline; errors throw DataError naming the file.
#pragma once

#include <string>

namespace ls_sample {

// Returns the file's bytes. Throws DataError when the file cannot be opened or read.
std::string read_whole_file(const std::string& path);

}  // namespace ls_sample
