#!/usr/bin/env python3
# Orchestrates one experiment.  usage: run.py NAME FREEZE_S NUDGE [hold]
#   NUDGE: none | push | "<agent command>" (e.g. "ack 1", "ack 3", "icmp 8", "replay")
#   4th arg "hold": queue (NFQUEUE) the client's packets during the freeze instead of dropping, release at restore
import subprocess as sp, sys, time, json, os, signal
name, N, nudge = sys.argv[1], float(sys.argv[2]), sys.argv[3]
hold = len(sys.argv) > 4 and sys.argv[4] == "hold"
PORT = 9099; D = "/tmp/nudge-lab/logs/" + name; os.makedirs(D, exist_ok=True)
WARM = 2.0; TAIL = 11.0
def nx(ns, *cmd, **kw): return ["ip", "netns", "exec", ns] + list(cmd)
def sh(ns, cmd): sp.run(nx(ns, "sh", "-c", cmd), check=True)
srv = sp.Popen(nx("nudge-srv", "python3", "/tmp/nudge-lab/server.py", str(PORT)), stdout=sp.PIPE, text=True)
srv.stdout.readline()
ag = sp.Popen(nx("nudge-br", "python3", "/tmp/nudge-lab/agent.py", str(PORT), D + "/agent.log"), stdin=sp.PIPE, stdout=sp.PIPE, text=True)
ag.stdout.readline()
def agent(c): ag.stdin.write(c + "\n"); ag.stdin.flush()
agent("verbose")
cli = sp.Popen(nx("nudge-cli", "python3", "/tmp/nudge-lab/client.py", "10.97.0.2", str(PORT), str(WARM + N + TAIL), D + "/replies.log"), stdout=sp.PIPE, text=True)
time.sleep(WARM)
nfq = None
if hold:
    nfq = sp.Popen(nx("nudge-srv", "python3", "/tmp/nudge-lab/nfq_hold.py", "5"), stdin=sp.PIPE, stdout=sp.PIPE, text=True)
    nfq.stdout.readline()
    sh("nudge-srv", f"iptables-nft -t raw -I PREROUTING -p tcp --dport {PORT} -j NFQUEUE --queue-num 5")
    sh("nudge-srv", f"nft add table inet frz; nft add chain inet frz out '{{ type filter hook output priority -300; policy accept; }}'; nft add rule inet frz out tcp sport {PORT} drop")
else:
    sh("nudge-srv", f"nft add table inet frz; nft add chain inet frz in '{{ type filter hook input priority -300; policy accept; }}'; nft add rule inet frz in tcp dport {PORT} drop; "
                    f"nft add chain inet frz out '{{ type filter hook output priority -300; policy accept; }}'; nft add rule inet frz out tcp sport {PORT} drop")
t_freeze = time.time()
time.sleep(N)
agent("state"); time.sleep(0.02)
if hold:
    # release FIRST: unregistering any netfilter hook in the netns (e.g. deleting an nft table/base chain)
    # makes nfnetlink_queue flush = DROP every queued packet (nfqnl_nf_hook_drop)
    sh("nudge-srv", "nft delete rule inet frz out handle $(nft -a list chain inet frz out | awk '/drop/{print $NF}')")
    nfq.stdin.write("release\n"); nfq.stdin.flush(); time.sleep(0.05)
    sh("nudge-srv", f"iptables-nft -t raw -D PREROUTING -p tcp --dport {PORT} -j NFQUEUE --queue-num 5")
sh("nudge-srv", "nft delete table inet frz")
t_restore = time.time()
if nudge == "push": agent("srvack"); time.sleep(0.005); os.kill(srv.pid, signal.SIGUSR1)   # srv.pid is ip-netns-exec which execs python: same pid
elif nudge.startswith("ext-icmp"):   # server-side only: 4-tuple + server rcv_nxt, no sniffing needed
    st = [l for l in open(D + "/agent.log") if " STATE " in l][-1]
    import re
    rcv_nxt = int(re.search(r"'srv_ack': (\d+)", st).group(1)); cport = int(re.search(r"'cport': (\d+)", st).group(1))
    sp.run(nx("nudge-srv", "python3", "/tmp/nudge-lab/nudge_icmp.py", "10.97.0.1", str(cport), "10.97.0.2", str(PORT), str(rcv_nxt)) + nudge.split()[1:])
elif nudge != "none": agent(nudge)
out = cli.communicate()[0]
summ = json.loads(out.split("SUMMARY", 1)[1])
recs = [l.split() for l in open(D + "/replies.log")]
after = [float(t) for t, n in recs if n != "PUSH" and float(t) > t_restore]
res = dict(name=name, freeze=N, nudge=nudge, hold=hold, gap=summ["max_gap"],
           gap_minus_freeze=round(summ["max_gap"] - N, 3),
           first_reply_after_restore=round(after[0] - t_restore, 3) if after else None,
           last_reply_before_freeze=round(max(float(t) for t, n in recs if n != "PUSH" and float(t) < t_freeze + 0.01) - t_freeze, 3),
           in_order=summ["in_order"], errors=summ["errors"], replies=summ["replies"],
           push_rx=[round(p - t_restore, 3) for p in summ["pushes"]])
agent("quit"); time.sleep(0.3)
for p in (ag, srv) + ((nfq,) if nfq else ()):
    if p.poll() is None: p.kill()
    p.wait()
open(D + "/result.json", "w").write(json.dumps(res) + "\n")
open(D + "/times.txt", "w").write("t_freeze %.6f\nt_restore %.6f\n" % (t_freeze, t_restore))
print(json.dumps(res))
