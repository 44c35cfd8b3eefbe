#!/bin/bash
# issue 16 acceptance: a no-freezing fixture run, the bench with profiles, profile on/off timing comparison
cd /work/i16n
export PTQ_HARNESS_DATA=/work/shared/data PTQ_HARNESS_CACHE=/work/main/.nox/ptq-cache PYTHONPATH=/work/i16n
PY=/work/main/.nox/bench/bin/python
date
date
/usr/bin/time -f "bench wall %e s" python3 -m nox -R -s bench -- --models resnet20 \
  --out results/local/20261201-issue16-resnet20 > /tmp/acc/bench.log 2>&1
date
for mode in profile no-profile; do
  /usr/bin/time -f "$mode wall %e s" $PY -m harness run --models resnet20 --backends onnxruntime,openvino --precisions fp32,int8 \
    --repeat 5 --test-limit 1000 --out /tmp/acc/$mode --$mode > /tmp/acc/$mode.log 2>&1
done
date
