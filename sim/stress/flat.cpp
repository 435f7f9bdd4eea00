// Batched Verilator harness for one streaming unit wrapped by
// trilut.sim.stress.FlatWrap (ports in_valid[K], in_ready[K], in_bits,
// out_valid, out_ready, out_bits, cfg, error; clk; reset generated inside).
//
// argv: IN_FILE OUT_FILE SEED IDLE_PERMILLE STALL_PERMILLE MAX_CYCLES [HOLD]
// IN_FILE (little-endian u32 words):
//   K; per channel: word offset in in_bits, words per beat, beats;
//   cfg word count, cfg words; out words per beat, expected out beats;
//   then each channel's beats, channel by channel.
// OUT_FILE: the out beats taken (words per beat each).
// stdout: one line "cycles C out N extra X error E hang H".
//
// Every cycle each input channel without a pending beat raises valid with
// probability 1 - idle (a raised valid is held until taken: stream rules);
// out_ready is low with probability stall, and a stall burst of up to 256
// cycles starts with probability 1/4096. After the expected beats, 64 more
// cycles with out_ready high count any extra (duplicated) beats. A run
// longer than MAX_CYCLES is a hang. HOLD (default 0): out_ready is held low
// for the first HOLD cycles (inputs offered meanwhile), then released: a long
// stalled output must neither lose nor duplicate data.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include "Vtop.h"
#include "verilated.h"

template <class T> static void put(T &port, const uint32_t *w, size_t n) {
    uint64_t v = w[0];
    if (n > 1) v |= uint64_t(w[1]) << 32;
    port = T(v);
}
template <std::size_t N> static void put(VlWide<N> &port, const uint32_t *w, size_t n) {
    for (size_t i = 0; i < N; i++) port[i] = i < n ? w[i] : 0;
}
template <class T> static void get(const T &port, uint32_t *w, size_t n) {
    uint64_t v = port;
    w[0] = uint32_t(v);
    if (n > 1) w[1] = uint32_t(v >> 32);
}
template <std::size_t N> static void get(const VlWide<N> &port, uint32_t *w, size_t n) {
    for (size_t i = 0; i < n && i < N; i++) w[i] = port[i];
}
template <class T> static size_t words_of(const T &) { return (sizeof(T) + 3) / 4; }
template <std::size_t N> static size_t words_of(const VlWide<N> &) { return N; }

static uint64_t rng_state;
static uint32_t rnd() {     // xorshift64*
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return uint32_t((rng_state * 2685821657736338717ULL) >> 32);
}

int main(int argc, char **argv) {
    if (argc != 7 && argc != 8) {
        fprintf(stderr, "usage: %s IN OUT SEED IDLE STALL MAX_CYCLES [HOLD]\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror(argv[1]); return 2; }
    std::vector<uint32_t> file;
    uint32_t word;
    while (fread(&word, 4, 1, f) == 1) file.push_back(word);
    fclose(f);
    rng_state = strtoull(argv[3], nullptr, 0) * 0x9E3779B97F4A7C15ULL + 1;
    const uint32_t idle = atoi(argv[4]), stall = atoi(argv[5]);
    const uint64_t max_cycles = strtoull(argv[6], nullptr, 0);
    const uint64_t hold = argc == 8 ? strtoull(argv[7], nullptr, 0) : 0;

    size_t p = 0;
    const uint32_t k = file[p++];
    std::vector<uint32_t> off(k), nw(k), beats(k), sent(k, 0);
    for (uint32_t c = 0; c < k; c++) { off[c] = file[p++]; nw[c] = file[p++]; beats[c] = file[p++]; }
    const uint32_t cfg_n = file[p++];
    std::vector<uint32_t> cfg(file.begin() + p, file.begin() + p + cfg_n);
    p += cfg_n;
    const uint32_t out_nw = file[p++], expect = file[p++];
    std::vector<size_t> base(k);
    for (uint32_t c = 0; c < k; c++) { base[c] = p; p += size_t(nw[c]) * beats[c]; }
    if (p != file.size()) { fprintf(stderr, "%s: bad length\n", argv[1]); return 2; }

    Vtop *top = new Vtop;
    std::vector<uint32_t> in_words(words_of(top->in_bits), 0);
    std::vector<uint32_t> out_words(words_of(top->out_bits), 0);
    if (out_nw > out_words.size()) { fprintf(stderr, "out words %u too many\n", out_nw); return 2; }
    put(top->cfg, cfg.data(), cfg.size());
    top->in_valid = 0;
    top->out_ready = 0;
    for (int i = 0; i < 16; i++) { top->clk = 0; top->eval(); top->clk = 1; top->eval(); }

    std::vector<uint32_t> got;
    got.reserve(size_t(expect) * out_nw);
    uint64_t cycles = 0, out = 0, extra = 0, tail = 0;
    uint32_t valid = 0, burst = 0;
    bool hang = false;
    while (true) {
        bool inputs_done = true;
        for (uint32_t c = 0; c < k; c++) {
            if (sent[c] < beats[c]) inputs_done = false;
            if (!(valid >> c & 1) && sent[c] < beats[c] && rnd() % 1000 >= idle) {
                valid |= 1u << c;
                const uint32_t *src = &file[base[c] + size_t(sent[c]) * nw[c]];
                for (uint32_t i = 0; i < nw[c]; i++) in_words[off[c] + i] = src[i];
            }
        }
        if (inputs_done && out >= expect && ++tail > 64) break;
        bool ready;
        if (cycles < hold) ready = false;
        else if (out >= expect) ready = true;
        else if (burst) { burst--; ready = false; }
        else if (stall && rnd() % 4096 == 0) { burst = rnd() % 256; ready = false; }
        else ready = rnd() % 1000 >= stall;
        top->clk = 0;
        put(top->in_bits, in_words.data(), in_words.size());
        top->in_valid = valid;
        top->out_ready = ready;
        top->eval();
        const uint32_t taken = valid & top->in_ready;
        if (ready && top->out_valid) {
            if (out < expect) {
                get(top->out_bits, out_words.data(), out_words.size());
                got.insert(got.end(), out_words.begin(), out_words.begin() + out_nw);
            } else {
                extra++;
            }
            out++;
        }
        top->clk = 1;
        top->eval();
        cycles++;
        for (uint32_t c = 0; c < k; c++)
            if (taken >> c & 1) { sent[c]++; valid &= ~(1u << c); }
        if (cycles > max_cycles) { hang = true; break; }
    }
    FILE *o = fopen(argv[2], "wb");
    if (!o) { perror(argv[2]); return 2; }
    fwrite(got.data(), 4, got.size(), o);
    fclose(o);
    printf("cycles %llu out %llu extra %llu error %u hang %d\n", (unsigned long long)cycles,
           (unsigned long long)(out - extra), (unsigned long long)extra, unsigned(top->error),
           int(hang));
    delete top;
    return 0;
}
