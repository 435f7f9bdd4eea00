// Verilator harness for the bridged accelerator tops (trilut.hw.bridge).
//
// Byte mode (default; top ByteAccelerator, ports rx_*, tx_*, host_turn):
//   stdin  <- host messages  [u8 cmd][u32 len][len bytes]  (little-endian)
//             cmd 'D': link bytes for rx, 'C': report cycles now, 'Q': quit,
//             'B' [u32 n]: run n more cycles (quiet or not), then report
//             ('B', cycles, 1 byte: leds) and hold the clock until the next
//             message; 'R': pulse the reset pin (every register to its reset
//             value), drop the link bytes in flight both ways, report ('R',
//             cycles after the power-on reset, leds just before it),
//             'T' [u64 num][u64 den]: the link throttle from now on (below;
//             num 0: a byte per cycle), between requests
//   stdout -> harness messages [u8 'D'][u64 cycles][u32 len][len bytes]
//             (bytes the design sent on tx; len may be 0: a cycle report)
//   Bytes of one message go in back to back (one per cycle the bridge is
//   ready), so a frame is never split by the harness.
//   Link throttle: argv[1] = NUM, argv[2] = DEN (optional; or a 'T' message) let a byte move
//   in each direction only when that direction has earned DEN credit at NUM
//   per cycle (NUM = baud, DEN = 10 * clk_hz: a UART's 10 line bits per
//   byte), so the cycle count is what the board's link allows; without them
//   a byte moves every cycle.
//
// Pin mode (-DPIN_MODE; top UartAccelerator, ports uart_rx, uart_tx, leds):
//   argv[1] = clock cycles per UART bit, argv[2] = the file descriptor of a
//   byte pipe or pty master (default 3). Host
//   bytes are bit-banged on uart_rx (8N1), uart_tx is sampled mid-bit.
//
// Byte mode clocks the design while a host byte is pending or the bridge
// works on a frame; once the bridge says it is the host's turn (host_turn:
// it waits between frames, its reply sent; the host, which waits for each
// reply, prepares its next request) it clocks exactly HOST_TURN more
// cycles, the host's turnaround, and then stops (blocks on input) until the
// host's next message (link bytes end the turn; 'C' and 'B' do not). Bytes
// that arrive earlier (the host had its reply before the bridge said
// host_turn) wait for the turn's end. Every cycle count is thus a function of the
// requests alone, not of how fast the host machine runs them (a loaded
// machine gives the same counts as an idle one). Messages are read at
// those points only, and every 1024 cycles otherwise (a host that gave up
// on a reply and resets the design).
// Pin mode clocks the design freely and blocks only when it is quiet and no
// host byte is pending (a UART host's timing is the line's).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cerrno>
#include <vector>
#include <poll.h>
#include <unistd.h>
#include "Vtop.h"
#include "verilated.h"

static Vtop *top;
static uint64_t cycles = 0;

static void tick() {
    top->clk = 0;
    top->eval();
    top->clk = 1;
    top->eval();
    cycles++;
}

static bool read_full(int fd, void *buf, size_t n) {
    uint8_t *p = static_cast<uint8_t *>(buf);
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        p += r;
        n -= r;
    }
    return true;
}

static bool write_full(int fd, const void *buf, size_t n) {
    const uint8_t *p = static_cast<const uint8_t *>(buf);
    while (n) {
        ssize_t r = write(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        p += r;
        n -= r;
    }
    return true;
}

static bool readable(int fd, int timeout_ms) {
    struct pollfd pfd = {fd, POLLIN, 0};
    int r = poll(&pfd, 1, timeout_ms);
    return r > 0;
}

// The design resets itself (trilut.sim.harness.PowerOnReset, 7 cycles;
// the rst pin restarts the count).
static void reset() {
    for (int i = 0; i < 8; i++) tick();
}

#ifndef PIN_MODE
// ---------------------------------------------------------------- byte mode
static std::vector<uint8_t> in, out;
static size_t in_pos = 0;
#ifndef HOST_TURN
#error "HOST_TURN (cycles of the host's turnaround) must be defined"
#endif
static bool hosts_turn = false;   // host_turn was seen since the last host bytes
static bool hold = false;         // link bytes that came early wait for the turn's end
static uint32_t turn = 0;         // cycles of the host's turn so far
static bool breaking = false;     // a 'B' is pending: stop at break_at
static uint64_t break_at = 0;

static void flush() {
    uint8_t hdr[13];
    hdr[0] = 'D';
    memcpy(hdr + 1, &cycles, 8);
    uint32_t n = out.size();
    memcpy(hdr + 9, &n, 4);
    if (!write_full(1, hdr, 13) || !write_full(1, out.data(), n)) exit(0);
    out.clear();
}

// A report of a 'B' or 'R' message: [kind][u64 cycles][u32 1][leds].
static void event(uint8_t kind, uint8_t leds) {
    if (!out.empty()) flush();
    uint8_t msg[14];
    msg[0] = kind;
    memcpy(msg + 1, &cycles, 8);
    uint32_t n = 1;
    memcpy(msg + 9, &n, 4);
    msg[13] = leds;
    if (!write_full(1, msg, 14)) exit(0);
}

// One direction of a throttled link: a byte that starts waiting is
// delivered after DEN / NUM cycles (its 10 bits on the line), the next one
// as many cycles later; idle time earns nothing (no bursts).
struct Throttle {
    bool on = false;
    uint64_t num = 1, den = 1, credit = 0;
    bool ready() const { return !on || credit >= den; }
    void take() { if (on) credit -= den; }
    void tick(bool waiting) {
        if (!on) return;
        if (!waiting) credit = 0;
        else if (credit < den) credit += num;
    }
};

static Throttle rx_link, tx_link;

static void throttle_reset() {
    rx_link.credit = tx_link.credit = 0;
}

// Both directions at NUM / DEN (num 0: off, a byte per cycle); false if
// 0 < NUM <= DEN does not hold.
static bool set_throttle(uint64_t num, uint64_t den) {
    if (num && (!den || num > den)) return false;
    for (Throttle *t : {&rx_link, &tx_link}) {
        t->on = num != 0;
        t->num = num ? num : 1;
        t->den = num ? den : 1;
    }
    throttle_reset();
    return true;
}

// Reads one host message; false on quit or end of input. ``early``: link
// bytes read before the host's turn is over are held until it is.
static bool read_message(bool early = false) {
    uint8_t hdr[5];
    if (!read_full(0, hdr, 5)) return false;
    uint32_t n;
    memcpy(&n, hdr + 1, 4);
    std::vector<uint8_t> buf(n);
    if (n && !read_full(0, buf.data(), n)) return false;
    if (hdr[0] == 'Q') return false;
    if (hdr[0] == 'C') {
        flush();
        return true;
    }
    if (hdr[0] == 'B') {
        uint32_t d = 0;
        memcpy(&d, buf.data(), n < 4 ? n : 4);
        breaking = true;
        break_at = cycles + d;
        return true;
    }
    if (hdr[0] == 'T') {
        uint64_t v[2] = {0, 1};
        memcpy(v, buf.data(), n < 16 ? n : 16);
        if (!set_throttle(v[0], v[1])) {
            fprintf(stderr, "harness: bad link throttle %llu / %llu\n",
                    (unsigned long long)v[0], (unsigned long long)v[1]);
            exit(2);
        }
        return true;
    }
    if (hdr[0] == 'R') {
        uint8_t leds = top->leds;
        top->rx_valid = 0;
        top->rst = 1;
        tick();
        top->rst = 0;
        reset();
        in.clear();
        out.clear();
        in_pos = 0;
        hosts_turn = hold = false;
        throttle_reset();
        event('R', leds);
        return true;
    }
    if (in_pos == in.size()) {
        in.clear();
        in_pos = 0;
    }
    in.insert(in.end(), buf.begin(), buf.end());
    if (early) hold = true;
    else hosts_turn = false;
    return true;
}

int main(int argc, char **argv) {
    if (argc > 2) {
        uint64_t num = strtoull(argv[1], nullptr, 10), den = strtoull(argv[2], nullptr, 10);
        if (!num || !set_throttle(num, den)) {
            fprintf(stderr, "usage: %s [NUM DEN] (0 < NUM <= DEN)\n", argv[0]);
            return 2;
        }
    }
    Verilated::commandArgs(argc, argv);
    top = new Vtop;
    top->rx_valid = 0;
    top->tx_ready = 1;
    top->rst = 0;
    reset();
    uint32_t since_tx = 0, since_poll = 0;
    for (;;) {
        if (breaking && cycles >= break_at) {
            breaking = false;
            event('B', top->leds);
            if (!read_message()) break;     // the clock holds until then
            continue;
        }
        if (in_pos == in.size() || hold) {
            if (top->rx_valid) {          // host_turn depends on rx_valid: settle it
                top->rx_valid = 0;
                top->eval();
            }
            if (hosts_turn && turn >= HOST_TURN && !breaking) {
                if (hold) {               // the turn is over: in they go
                    hold = hosts_turn = false;
                    continue;
                }
                if (!out.empty()) flush();
                if (!read_message()) break;
                continue;
            }
            if (!hosts_turn && !hold && ++since_poll >= 1024) {
                since_poll = 0;
                if (readable(0, 0) && !read_message(true)) break;
            }
        }
        bool have = in_pos < in.size() && !hold && rx_link.ready();
        top->rx_valid = have;
        if (have) top->rx_payload = in[in_pos];
        top->tx_ready = tx_link.ready();
        top->clk = 0;
        top->eval();
        bool rx_fire = have && top->rx_ready;
        bool tx_wait = top->tx_valid;
        bool tx_fire = tx_wait && top->tx_ready;
        uint8_t txb = top->tx_payload;
        top->clk = 1;
        top->eval();
        cycles++;
        if (hosts_turn) {
            turn++;
        } else if (top->host_turn && (in_pos == in.size() || hold)) {
            // (not while a throttled frame waits for its first byte; once
            // set, a turn lasts while the bridge polls STATUS)
            hosts_turn = true;
            turn = 1;
        }
        if (rx_fire) {
            in_pos++;
            rx_link.take();
        }
        if (tx_fire) {
            out.push_back(txb);
            tx_link.take();
        }
        rx_link.tick(in_pos < in.size() && !hold);
        tx_link.tick(tx_wait);
        if (tx_wait) {
            since_tx = 0;
        } else if (!out.empty() && ++since_tx >= 8) {
            flush();
        }
    }
    top->final();
    delete top;
    return 0;
}

#else
// ---------------------------------------------------------------- pin mode
static int FD = 3;
static const int QUIET_LED = QUIET_BIT;

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s DIVISOR [FD]\n", argv[0]);
        return 2;
    }
    int div = atoi(argv[1]);
    if (argc > 2) FD = atoi(argv[2]);
    Verilated::commandArgs(argc, argv);
    top = new Vtop;
    top->uart_rx = 1;
    top->rst = 0;
    reset();
    std::vector<uint8_t> in, out;
    size_t in_pos = 0;
    // Transmitter toward the design: bit index (-1 idle), cycles left in bit.
    int tx_bit = -1, tx_left = 0;
    uint16_t tx_frame = 0;
    // Receiver from the design.
    int rx_state = 0, rx_left = 0, rx_bit = 0;
    uint8_t rx_byte = 0;
    uint32_t since_poll = 0, since_out = 0;
    uint8_t buf[4096];
    for (;;) {
        bool idle = tx_bit < 0 && in_pos == in.size() && rx_state == 0 &&
                    ((top->leds >> QUIET_LED) & 1);
        if (idle || ++since_poll >= 1024) {
            since_poll = 0;
            if (idle && !out.empty()) {
                if (!write_full(FD, out.data(), out.size())) break;
                out.clear();
            }
            if (readable(FD, idle ? -1 : 0)) {
                ssize_t r = read(FD, buf, sizeof buf);
                if (r <= 0) break;
                if (in_pos == in.size()) {
                    in.clear();
                    in_pos = 0;
                }
                in.insert(in.end(), buf, buf + r);
            }
        }
        if (tx_bit < 0 && in_pos < in.size()) {
            tx_frame = (uint16_t)(0x200 | (in[in_pos++] << 1));   // start 0, data, stop 1
            tx_bit = 0;
            tx_left = div;
        }
        top->uart_rx = tx_bit < 0 ? 1 : (tx_frame >> tx_bit) & 1;
        tick();
        if (tx_bit >= 0 && --tx_left == 0) {
            tx_left = div;
            if (++tx_bit == 10) tx_bit = -1;
        }
        int line = top->uart_tx;
        switch (rx_state) {
        case 0:
            if (!line) { rx_state = 1; rx_left = div / 2; }
            break;
        case 1:
            if (--rx_left == 0) {
                if (line) rx_state = 0;
                else { rx_state = 2; rx_left = div; rx_bit = 0; rx_byte = 0; }
            }
            break;
        case 2:
            if (--rx_left == 0) {
                rx_left = div;
                if (rx_bit < 8) rx_byte |= line << rx_bit++;
                else {
                    if (line) { out.push_back(rx_byte); since_out = 0; }
                    else fprintf(stderr, "harness: framing error on uart_tx\n");
                    rx_state = 0;
                }
            }
            break;
        }
        if (!out.empty() && rx_state == 0 && ++since_out >= (uint32_t)(20 * div)) {
            if (!write_full(FD, out.data(), out.size())) break;
            out.clear();
        }
    }
    top->final();
    delete top;
    return 0;
}
#endif
