package uk.nhs.dnarisk.jvmpeer;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.microsoft.ml.lightgbm.PredictionType;
import io.github.metarank.lightgbm4j.LGBMBooster;
import io.github.metarank.lightgbm4j.LGBMException;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A model directory as scoring.Load serves it: model.txt through LightGBM's own library
 * (lightgbm4j), contract.json's inputs, its calibration applied exactly as scoring.Calibration does,
 * and the risk bands.
 */
final class Model implements AutoCloseable {
  final String id;
  final List<String> names = new ArrayList<>();
  private final LGBMBooster booster;
  private final int[] store; // index into Features' vector, or -1 for a booking extra
  private final String[] extra;
  private final boolean[] categorical;
  private final double[] calX, calY; // null: no calibration
  private final String[] bandNames;
  private final double[] bandMin;

  Model(Path dir) throws IOException, LGBMException {
    JsonNode contract = new ObjectMapper().readTree(dir.resolve("contract.json").toFile());
    byte[] modelBytes = Files.readAllBytes(dir.resolve("model.txt"));
    String want = contract.path("model_sha256").asText("");
    if (!want.isEmpty()) {
      String got;
      try {
        got = HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(modelBytes));
      } catch (NoSuchAlgorithmException e) {
        throw new IllegalStateException(e);
      }
      if (!got.equals(want)) {
        throw new IllegalArgumentException(dir + "/model.txt does not match contract.json's model_sha256");
      }
    }
    id = contract.get("model_id").asText();
    JsonNode features = contract.get("features");
    int n = features.size();
    store = new int[n];
    extra = new String[n];
    categorical = new boolean[n];
    for (int i = 0; i < n; i++) {
      JsonNode f = features.get(i);
      String name = f.get("name").asText();
      names.add(name);
      categorical[i] = f.path("type").asText().equals("categorical");
      if (f.has("codes")) {
        throw new IllegalArgumentException("feature " + name + ": text codes are not supported by this peer");
      }
      if (name.startsWith("extra.")) {
        store[i] = -1;
        extra[i] = name.substring("extra.".length());
      } else {
        store[i] = Features.NAMES.indexOf(name);
        if (store[i] < 0) {
          throw new IllegalArgumentException("contract feature " + name + " is not computed by the feature store");
        }
      }
    }
    JsonNode cal = contract.get("calibration");
    if (cal != null && !cal.isNull()) {
      calX = doubles(cal.get("x"));
      calY = doubles(cal.get("y"));
      if (calX.length < 2 || calX.length != calY.length) {
        throw new IllegalArgumentException("calibration: knots differ in number");
      }
    } else {
      calX = calY = null;
    }
    JsonNode bands = contract.get("risk_bands");
    bandNames = new String[bands.size()];
    bandMin = new double[bands.size()];
    for (int i = 0; i < bands.size(); i++) {
      bandNames[i] = bands.get(i).get("name").asText();
      bandMin[i] = bands.get(i).get("min_probability").asDouble();
    }
    booster = LGBMBooster.loadModelFromString(new String(modelBytes, java.nio.charset.StandardCharsets.UTF_8));
    if (!Arrays.asList(booster.getFeatureNames()).equals(names)) {
      throw new IllegalArgumentException("model.txt features " + Arrays.toString(booster.getFeatureNames())
          + " differ from contract.json's " + names);
    }
  }

  private static double[] doubles(JsonNode a) {
    double[] out = new double[a.size()];
    for (int i = 0; i < out.length; i++) {
      out[i] = a.get(i).asDouble();
    }
    return out;
  }

  /**
   * The model input for ev (scoring.Model.Vector): contract order, booking extras by key, a missing
   * or negative categorical value as -1 rather than NaN.
   */
  double[] vector(Appointment ev, double[] v) {
    double[] x = new double[store.length];
    for (int i = 0; i < x.length; i++) {
      double val;
      if (store[i] >= 0) {
        val = v[store[i]];
      } else {
        Double e = ev.booking != null && ev.booking.extra != null ? ev.booking.extra.get(extra[i]) : null;
        val = e == null ? Double.NaN : e;
      }
      if (categorical[i] && (Double.isNaN(val) || val < 0 || val >= Integer.MAX_VALUE)) {
        val = -1;
      }
      x[i] = val;
    }
    return x;
  }

  /** The served probability: the trees (LightGBM's sigmoid), then the calibration. */
  double score(double[] x) throws LGBMException {
    return calibrate(booster.predictForMatSingleRow(x, PredictionType.C_API_PREDICT_NORMAL));
  }

  /**
   * scoring.Calibration.apply: numpy.interp(p, X, Y) for one value, with numpy's arithmetic
   * (slope*(p - x[j]) + y[j], no fused multiply-add).
   */
  double calibrate(double p) {
    if (calX == null) {
      return p;
    }
    return interp(p, calX, calY);
  }

  static double interp(double p, double[] xs, double[] ys) {
    int n = xs.length;
    if (Double.isNaN(p)) {
      return p;
    }
    if (p <= xs[0]) {
      return ys[0];
    }
    if (p >= xs[n - 1]) {
      return ys[n - 1];
    }
    int j = Arrays.binarySearch(xs, p);
    if (j >= 0) {
      return ys[j];
    }
    j = -j - 2; // the last knot below p
    double slope = (ys[j + 1] - ys[j]) / (xs[j + 1] - xs[j]);
    return slope * (p - xs[j]) + ys[j];
  }

  /** The last risk band whose min_probability is at most p (scoring.Model.Band). */
  String band(double p) {
    for (int i = bandNames.length - 1; i > 0; i--) {
      if (p >= bandMin[i]) {
        return bandNames[i];
      }
    }
    return bandNames[0];
  }

  /** The model's inputs by name, missing (NaN, or -1 for a categorical) left out. */
  Map<String, Double> featureMap(double[] x) {
    Map<String, Double> out = new LinkedHashMap<>();
    for (int i = 0; i < x.length; i++) {
      if (Double.isNaN(x[i]) || (categorical[i] && x[i] < 0)) {
        continue;
      }
      out.put(names.get(i), x[i]);
    }
    return out;
  }

  @Override
  public void close() throws LGBMException {
    booster.close();
  }
}
