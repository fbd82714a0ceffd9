"""Chat requests: which models to try (`route`: classify and plan, or a plain model, or an affinity
pin from `affinity`) and one served exchange (`session`: forward, pin, attribute, record) that the
gRPC and HTTP fronts only translate."""
