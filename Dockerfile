# Small images of the long-running commands, one build for all of them:
#   docker build --target consumer   -t dnarisk-consumer .
#   docker build --target producer   -t dnarisk-producer .
#   docker build --target dispatcher -t dnarisk-dispatcher .
#   docker build --target notifystub -t dnarisk-notifystub .
#   docker build --target pasgateway -t dnarisk-pasgateway .
#   docker build --target monitor    -t dnarisk-monitor .
# docker-compose.yml builds every target. `make test` builds the same package list with
# CGO_ENABLED=0 (scripts/dockerfile-check.sh reads it from the RUN line below), since our
# build machines have no Docker engine.

FROM golang:1.26 AS build
WORKDIR /src
# Modules first, so a source change does not re-download them.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/ ./cmd/consumer ./cmd/producer ./cmd/dispatcher ./cmd/notifystub ./cmd/pasgateway ./cmd/contactkey ./cmd/monitor ./cmd/promote

# Static binaries: no shell, no package manager, not root. The base carries CA certificates
# (Kafka/Redis TLS, GOV.UK Notify) and time zones (quiet hours, "reminders today").
FROM gcr.io/distroless/static-debian12:nonroot AS runtime
USER nonroot:nonroot

FROM runtime AS producer
COPY --from=build /out/producer /usr/local/bin/producer
EXPOSE 9465
ENTRYPOINT ["/usr/local/bin/producer"]

FROM runtime AS consumer
COPY --from=build /src/models /models
ENV MODEL_DIR=/models/default
COPY --from=build /out/consumer /usr/local/bin/consumer
# promote swaps a challenger into a writable model volume (docs/model.md, "Promoting a challenger").
COPY --from=build /out/promote /usr/local/bin/promote
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/consumer"]

FROM runtime AS dispatcher
COPY --from=build /src/cmd/dispatcher/config.example.json /etc/dnarisk/dispatcher.json
ENV DISPATCHER_CONFIG=/etc/dnarisk/dispatcher.json
COPY --from=build /out/dispatcher /usr/local/bin/dispatcher
EXPOSE 9466
ENTRYPOINT ["/usr/local/bin/dispatcher"]

FROM runtime AS notifystub
COPY --from=build /out/notifystub /usr/local/bin/notifystub
EXPOSE 8089
ENTRYPOINT ["/usr/local/bin/notifystub"]

FROM runtime AS pasgateway
COPY --from=build /out/pasgateway /usr/local/bin/pasgateway
# MLLP (TLS), FHIR (HTTPS), operations endpoint.
EXPOSE 2575 8443 9467
ENTRYPOINT ["/usr/local/bin/pasgateway"]

FROM runtime AS monitor
COPY --from=build /src/models /models
ENV MODEL_DIR=/models/default
COPY --from=build /out/monitor /usr/local/bin/monitor
EXPOSE 9468
ENTRYPOINT ["/usr/local/bin/monitor"]
