# Opens a file, reads the first half, says "half" and waits for a line on stdin, then reads the rest
# and prints the md5 of the whole: a reader that holds a file open across whatever the test does.
import hashlib, sys

path = sys.argv[1]
with open(path, 'rb') as f:
    size = f.seek(0, 2)
    f.seek(0)
    h = hashlib.md5()
    h.update(f.read(size // 2))
    print('half', flush=True)
    sys.stdin.readline()
    while True:
        b = f.read(1 << 20)
        if not b:
            break
        h.update(b)
    print(h.hexdigest(), flush=True)
