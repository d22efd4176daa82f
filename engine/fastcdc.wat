;; FastCDC's cut loop in WebAssembly: the same rule as `cut` in fastcdc.ts
;; (which documents the algorithm and stays the reference), ~2.3x faster
;; than V8's code for the JavaScript loop on this machine
;; (bench/micro-chunker.ts). Compiled by scripts/build-wasm.mjs into
;; fastcdc-wasm.ts; a test checks that the two match.
;;
;; Memory layout: the gear table (256 x i32, little-endian) at byte 0, the
;; data from byte 1024 on. Addresses passed to `cut` are memory addresses.
(module
  (memory (export "memory") 1)
  ;; Returns the length of the chunk that starts at $start, looking at most
  ;; at bytes [$start, $end). Trusts its inputs, as `cut` does.
  (func (export "cut")
    (param $start i32) (param $end i32)
    (param $min i32) (param $avg i32) (param $max i32)
    (param $maskS i32) (param $maskL i32)
    (result i32)
    (local $n i32) (local $normal i32) (local $last i32) (local $h i32) (local $i i32)
    (local.set $n (i32.sub (local.get $end) (local.get $start)))
    (if (i32.le_u (local.get $n) (local.get $min)) (then (return (local.get $n))))
    (if (i32.gt_u (local.get $n) (local.get $max)) (then (local.set $n (local.get $max))))
    ;; the strict mask until avgSize, the loose one after it
    (local.set $normal (i32.add (local.get $start)
      (select (local.get $n) (local.get $avg) (i32.lt_u (local.get $n) (local.get $avg)))))
    (local.set $last (i32.add (local.get $start) (local.get $n)))
    ;; cut-point skipping: the first minSize bytes are not hashed
    (local.set $i (i32.add (local.get $start) (local.get $min)))
    (block $strict_done
      (loop $strict
        (br_if $strict_done (i32.ge_u (local.get $i) (local.get $normal)))
        ;; h = (h << 1) + gear[byte]
        (local.set $h (i32.add (i32.shl (local.get $h) (i32.const 1))
          (i32.load (i32.shl (i32.load8_u (local.get $i)) (i32.const 2)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (if (i32.eqz (i32.and (local.get $h) (local.get $maskS)))
          (then (return (i32.sub (local.get $i) (local.get $start)))))
        (br $strict)))
    (block $loose_done
      (loop $loose
        (br_if $loose_done (i32.ge_u (local.get $i) (local.get $last)))
        (local.set $h (i32.add (i32.shl (local.get $h) (i32.const 1))
          (i32.load (i32.shl (i32.load8_u (local.get $i)) (i32.const 2)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (if (i32.eqz (i32.and (local.get $h) (local.get $maskL)))
          (then (return (i32.sub (local.get $i) (local.get $start)))))
        (br $loose)))
    (local.get $n))
)
