# ports.sh - free loopback ports for the test, bench and cluster scripts
# (POSIX sh). Source it after setting ROOT: . "$ROOT/scripts/ports.sh"

# free_ports N: prints N distinct loopback TCP ports, free right now, on one
# line (all N are bound at once while they are chosen, so no two are equal).
free_ports() {
    python3 -c 'import socket,sys
s=[socket.socket() for _ in range(int(sys.argv[1]))]
for x in s: x.bind(("127.0.0.1",0))
print(" ".join(str(x.getsockname()[1]) for x in s))' "$1"
}

# free_port: prints one loopback TCP port that is free right now.
free_port() {
    free_ports 1
}
