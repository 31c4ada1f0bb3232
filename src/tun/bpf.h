// What the addon's eBPF programs (ringclock.cc, fastpath.cc) share: the
// bpf(2) system call, one instruction, the loader that keeps the verifier's
// reason, and forward jumps to labels. Plain C++ over the system call: no
// libbpf, no compiler for BPF; each program is a vector of instructions
// written out by hand.
#pragma once

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include <linux/bpf.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace ebpf {

inline long Bpf(int cmd, union bpf_attr* attr) {
  return syscall(__NR_bpf, cmd, attr, sizeof(*attr));
}

inline bpf_insn Insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
  bpf_insn i{};
  i.code = code;
  i.dst_reg = dst & 0xf;
  i.src_reg = src & 0xf;
  i.off = off;
  i.imm = imm;
  return i;
}

// Loads a program; the fd, or -1 with errno kept and *why set to the
// verifier's reason (a kernel older than 5.12 lacks the atomic fetch). The
// first try asks for no log: a verbose log of a longer program can overflow
// any buffer (ENOSPC), failing a program that is fine. Only a refused
// program is loaded again with the log on, for the reason. `name` (at most
// 15 characters) is what /proc/PID/fdinfo and bpftool call it.
inline int LoadProgram(bpf_prog_type type, const std::vector<bpf_insn>& prog, std::string* why,
                       const char* name = nullptr) {
  static const char license[] = "Dual MIT/GPL";
  std::vector<char> log;
  for (int attempt = 0; attempt < 2; attempt++) {
    union bpf_attr a;
    std::memset(&a, 0, sizeof a);
    a.prog_type = type;
    a.insns = reinterpret_cast<uintptr_t>(prog.data());
    a.insn_cnt = static_cast<uint32_t>(prog.size());
    a.license = reinterpret_cast<uintptr_t>(license);
    if (name) std::memcpy(a.prog_name, name, std::min(std::strlen(name), sizeof a.prog_name - 1));
    if (attempt == 1) {
      log.assign(1 << 20, '\0');
      a.log_buf = reinterpret_cast<uintptr_t>(log.data());
      a.log_size = static_cast<uint32_t>(log.size());
      a.log_level = 1;
    }
    int fd = static_cast<int>(Bpf(BPF_PROG_LOAD, &a));
    if (fd >= 0) return fd;
    if (attempt == 1 || (errno != EACCES && errno != EINVAL)) break;  // EPERM, ENOMEM...: no log will say more
  }
  int e = errno;
  // The verifier's last lines are its statistics ("processed N insns ..."); the reason is the line before.
  std::string v(log.empty() ? "" : log.data());
  for (;;) {
    while (!v.empty() && v.back() == '\n') v.pop_back();
    size_t nl = v.rfind('\n');
    std::string last = nl == std::string::npos ? v : v.substr(nl + 1);
    if (nl == std::string::npos || (last.rfind("processed ", 0) != 0 && last.rfind("verification time", 0) != 0 &&
                                    last.rfind("stack depth", 0) != 0)) {
      // and the instruction it refused, the line before ("12: (0f) r2 += r4")
      size_t before = nl == std::string::npos ? std::string::npos : v.rfind('\n', nl - 1);
      std::string insn = nl == std::string::npos ? "" : v.substr(before == std::string::npos ? 0 : before + 1, nl - (before == std::string::npos ? 0 : before + 1));
      *why = insn.empty() ? last : last + " at " + insn;
      break;
    }
    v.resize(nl);
  }
  errno = e;
  return -1;
}

// Forward jumps to labels, patched once the labels are placed.
struct Labels {
  std::vector<bpf_insn>* p;
  std::vector<std::pair<size_t, int>> jumps;
  std::vector<size_t> at;
  explicit Labels(std::vector<bpf_insn>* prog, int count) : p(prog), at(count, 0) {}
  void Jump(uint8_t code, uint8_t dst, uint8_t src, int32_t imm, int label) {
    jumps.emplace_back(p->size(), label);
    p->push_back(Insn(code, dst, src, 0, imm));
  }
  void Place(int label) { at[label] = p->size(); }
  void Patch() {
    for (auto [j, label] : jumps) (*p)[j].off = static_cast<int16_t>(at[label] - (j + 1));
  }
};

}  // namespace ebpf
