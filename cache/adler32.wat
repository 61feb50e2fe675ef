;; Adler-32 (RFC 1950) with WebAssembly SIMD, for desfs's block checksums.
;; Assembled into cache/adler32-wasm.ts by `npm run build:wasm` (test/tools/build-wasm.ts); a test
;; checks that the embedded module is this source.
;;
;; adler32(ptr, len, adler) continues `adler` over len bytes of memory at ptr. Bytes are taken 16 at a
;; time: for a step of 16 bytes x1..x16 entered with sums (a, b),
;;   a' = a + (x1 + ... + x16)
;;   b' = b + 16a + (16 x1 + 15 x2 + ... + 1 x16)
;; so within a run of steps, b gains 16 x (a before the run) x steps, plus 16 x the running sums of a
;; that each step starts from (kept per lane in $prefix), plus the weighted sums of each step. Runs
;; are at most 5552 bytes (zlib's NMAX): every sum stays below 2^32 before the modulo, exactly as in
;; the byte-at-a-time algorithm, because it is the same sum grouped differently.
(module
  (memory (export "memory") 17)
  (func (export "adler32") (param $ptr i32) (param $len i32) (param $adler i32) (result i32)
    (local $a i32) (local $b i32) (local $steps i32) (local $end i32)
    (local $sum v128) (local $weighted v128) (local $prefix v128)
    (local $bytes v128) (local $lo v128) (local $hi v128)
    (local.set $a (i32.and (local.get $adler) (i32.const 0xffff)))
    (local.set $b (i32.shr_u (local.get $adler) (i32.const 16)))
    (block $done
      (loop $run
        (br_if $done (i32.eqz (local.get $len)))
        (local.set $steps (i32.shr_u
          (select (local.get $len) (i32.const 5552) (i32.lt_u (local.get $len) (i32.const 5552)))
          (i32.const 4)))
        (if (local.get $steps)
          (then
            (local.set $sum (v128.const i32x4 0 0 0 0))
            (local.set $weighted (v128.const i32x4 0 0 0 0))
            (local.set $prefix (v128.const i32x4 0 0 0 0))
            (local.set $end (i32.add (local.get $ptr) (i32.shl (local.get $steps) (i32.const 4))))
            (local.set $b (i32.add (local.get $b) (i32.mul (local.get $a) (i32.shl (local.get $steps) (i32.const 4)))))
            (loop $step
              (local.set $prefix (i32x4.add (local.get $prefix) (local.get $sum)))
              (local.set $bytes (v128.load (local.get $ptr)))
              (local.set $lo (i16x8.extend_low_i8x16_u (local.get $bytes)))
              (local.set $hi (i16x8.extend_high_i8x16_u (local.get $bytes)))
              (local.set $sum (i32x4.add (local.get $sum)
                (i32x4.add (i32x4.dot_i16x8_s (local.get $lo) (v128.const i16x8 1 1 1 1 1 1 1 1))
                           (i32x4.dot_i16x8_s (local.get $hi) (v128.const i16x8 1 1 1 1 1 1 1 1)))))
              (local.set $weighted (i32x4.add (local.get $weighted)
                (i32x4.add (i32x4.dot_i16x8_s (local.get $lo) (v128.const i16x8 16 15 14 13 12 11 10 9))
                           (i32x4.dot_i16x8_s (local.get $hi) (v128.const i16x8 8 7 6 5 4 3 2 1)))))
              (local.set $ptr (i32.add (local.get $ptr) (i32.const 16)))
              (br_if $step (i32.lt_u (local.get $ptr) (local.get $end))))
            (local.set $b (i32.add (local.get $b) (i32.add
              (i32.shl (i32.add
                (i32.add (i32x4.extract_lane 0 (local.get $prefix)) (i32x4.extract_lane 1 (local.get $prefix)))
                (i32.add (i32x4.extract_lane 2 (local.get $prefix)) (i32x4.extract_lane 3 (local.get $prefix)))) (i32.const 4))
              (i32.add
                (i32.add (i32x4.extract_lane 0 (local.get $weighted)) (i32x4.extract_lane 1 (local.get $weighted)))
                (i32.add (i32x4.extract_lane 2 (local.get $weighted)) (i32x4.extract_lane 3 (local.get $weighted)))))))
            (local.set $a (i32.add (local.get $a) (i32.add
              (i32.add (i32x4.extract_lane 0 (local.get $sum)) (i32x4.extract_lane 1 (local.get $sum)))
              (i32.add (i32x4.extract_lane 2 (local.get $sum)) (i32x4.extract_lane 3 (local.get $sum))))))
            (local.set $len (i32.sub (local.get $len) (i32.shl (local.get $steps) (i32.const 4)))))
          (else
            ;; Fewer than 16 bytes left: one at a time.
            (loop $byte
              (local.set $a (i32.add (local.get $a) (i32.load8_u (local.get $ptr))))
              (local.set $b (i32.add (local.get $b) (local.get $a)))
              (local.set $ptr (i32.add (local.get $ptr) (i32.const 1)))
              (local.set $len (i32.sub (local.get $len) (i32.const 1)))
              (br_if $byte (local.get $len)))))
        (local.set $a (i32.rem_u (local.get $a) (i32.const 65521)))
        (local.set $b (i32.rem_u (local.get $b) (i32.const 65521)))
        (br $run)))
    (i32.or (i32.shl (local.get $b) (i32.const 16)) (local.get $a))))
