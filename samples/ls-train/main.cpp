// ls-train: the command-line front end of libls_train, written on the public C API only.
//   ls-train info     version, ABI, backends and devices
//   ls-train plan     memory plan of a model config, computed without allocating
//   ls-train train    train the sample English->German translation model
#include <cstdio>
#include <cstring>
#include <string>

#include "cli.h"

namespace {

void usage(FILE* f) {
  std::fprintf(f,
               "usage: ls-train <command> [options]\n\n"
               "commands:\n"
               "  info    version, ABI version, backends compiled in, devices found\n"
               "  plan    memory plan of a model config, computed without allocating\n"
               "  train   train the sample translation model (English -> German)\n\n"
               "Every command takes --help.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  std::string cmd = argv[1];
  try {
    if (cmd == "info") return cli::cmd_info(argc, argv);
    if (cmd == "plan") return cli::cmd_plan(argc, argv);
    if (cmd == "train") return cli::cmd_train(argc, argv);
    if (cmd == "--help" || cmd == "-h" || cmd == "help") {
      usage(stdout);
      return 0;
    }
    if (cmd == "--version") {
      std::printf("ls-train %s\n", ls_version_string());
      return 0;
    }
    std::fprintf(stderr, "ls-train: unknown command '%s'\n\n", cmd.c_str());
    usage(stderr);
    return 2;
  } catch (const cli::UsageError& e) {
    std::fprintf(stderr, "ls-train %s: %s\n", cmd.c_str(), e.what());
    return 2;
  } catch (const cli::ApiError& e) {
    std::fprintf(stderr, "ls-train %s: %s\n", cmd.c_str(), e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ls-train %s: error: %s\n", cmd.c_str(), e.what());
    return 1;
  }
}
