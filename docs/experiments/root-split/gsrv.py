# Experiment only: G's transparent listeners (TCP 15001, UDP 15002); answer "G saw <orig dst>".
import socket, threading
IP_TRANSPARENT, IP_RECVORIGDSTADDR = 19, 20
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1); t.bind(("0.0.0.0", 15001)); t.listen(16)
def tcp():
    while True:
        c, a = t.accept(); c.sendall(f"G saw tcp {c.getsockname()}\n".encode()); c.close()
threading.Thread(target=tcp, daemon=True).start()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1); u.setsockopt(socket.SOL_IP, IP_RECVORIGDSTADDR, 1)
u.bind(("0.0.0.0", 15002))
while True:
    data, anc, fl, src = u.recvmsg(2048, 256)
    od = anc[0][2]; port = int.from_bytes(od[2:4], "big"); ip = socket.inet_ntoa(od[4:8])
    r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); r.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
    r.bind((ip, port)); r.sendto(f"G saw udp {(ip, port)}\n".encode(), src); r.close()
