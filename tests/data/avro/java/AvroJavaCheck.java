/*
 * AvroJavaCheck: reads Safeshare's Kafka messages with Apache Avro's Java reference
 * implementation, as an outside checker would.
 *
 * What it checks. Every message the project writes is Avro single-object encoding
 * (C3 01, the CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form
 * as 8 bytes little-endian, the binary body). This program parses every record schema
 * (the expanded, self-contained JSON Codec.raw_schemas() gives; each with its own
 * Schema.Parser, since each one defines the named types it uses), puts them all in
 * one SchemaStore.Cache and, per message, decodes it with Avro's own
 * BinaryMessageDecoder<GenericRecord> (reader schema: the record type the message is
 * said to be; writer schema: whatever the store finds for the message's fingerprint).
 * It prints one JSON line per message:
 *
 *   {"label", "ok": true, "schema": writer schema's full name,
 *    "fingerprint": SchemaNormalization.parsingFingerprint64 of it (16 hex digits,
 *                   the 8 bytes little-endian, as on the wire),
 *    "reencoded_equal": Avro's BinaryMessageEncoder writes exactly the input bytes,
 *    "record": the record in the Avro specification's JSON encoding (JsonEncoder:
 *              unions as {"branch": value}, bytes as ISO-8859-1 text, enums as their
 *              symbol, timestamp-millis and date as the plain long / int)}
 *   {"label", "ok": false, "error": "ExceptionClass: message"}   when Avro refuses it
 *
 * Input: argv[0] a JSON array of record schemas; argv[1] a file of lines
 * "label<TAB>expected record full name<TAB>message in hex".
 *
 * By hand (from the checkout; the jars are fetched by tests/avro_java.py into var/):
 *
 *   python -c 'import json; from broker.codec import Codec; \
 *     print(json.dumps(list(Codec.default().raw_schemas().values())))' > /tmp/schemas.json
 *   printf 'one\tsafeshare.ConcernEvent\t%s\n' "$(xxd -p -c0 message.bin)" > /tmp/messages.tsv
 *   javac -cp 'var/avro-java/1.12.2/libs/*' -d /tmp/avrocheck tests/data/avro/java/AvroJavaCheck.java
 *   java -cp '/tmp/avrocheck:var/avro-java/1.12.2/libs/*' AvroJavaCheck /tmp/schemas.json /tmp/messages.tsv
 *
 * tests/test_codec_java_interop.py does all of this and compares every line with the
 * project's own reading of the same bytes.
 *
 * Second mode, the schema files themselves: "AvroJavaCheck --avsc DIR" parses every
 * DIR/*.avsc with one org.apache.avro.SchemaParser (Avro 1.12: a name another file
 * defines resolves once all are parsed), and every DIR/history/<record>/<n>.avsc on its
 * own (a kept version is self-contained), and prints one JSON line per record schema:
 *
 *   {"file", "ok": true, "schema": full name, "fingerprint": as above}
 *   {"file", "ok": false, "error": "ExceptionClass: message"}   when Avro refuses it
 */

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.ByteArrayOutputStream;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.PrintStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import org.apache.avro.Schema;
import org.apache.avro.SchemaNormalization;
import org.apache.avro.SchemaParser;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.EncoderFactory;
import org.apache.avro.io.JsonEncoder;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.message.BinaryMessageEncoder;
import org.apache.avro.message.SchemaStore;

public final class AvroJavaCheck {
  private static final ObjectMapper JSON = new ObjectMapper();

  public static void main(String[] args) throws Exception {
    if (args.length == 2 && args[0].equals("--avsc")) {
      schemaFiles(Path.of(args[1]));
      return;
    }
    if (args.length != 2) {
      System.err.println("usage: AvroJavaCheck SCHEMAS.json MESSAGES.tsv | --avsc DIR");
      System.exit(2);
    }
    SchemaStore.Cache store = new SchemaStore.Cache();
    Map<String, Schema> byName = new HashMap<>();
    for (JsonNode raw : (ArrayNode) JSON.readTree(Files.readString(Path.of(args[0])))) {
      Schema schema = new Schema.Parser().parse(raw.toString());
      store.addSchema(schema);
      byName.put(schema.getFullName(), schema);
    }
    GenericData model = GenericData.get(); // no logical-type conversions: longs stay longs
    List<String> lines = Files.readAllLines(Path.of(args[1]), StandardCharsets.UTF_8);
    // UTF-8 whatever the locale; one message per line ("\n": bytes read as ISO-8859-1
    // text may hold U+0085, which some readers count as a line break).
    PrintStream stdout = new PrintStream(new FileOutputStream(FileDescriptor.out), true, "UTF-8");
    for (String line : lines) {
      if (line.isBlank()) {
        continue;
      }
      String[] parts = line.split("\t", -1);
      ObjectNode out = JSON.createObjectNode();
      out.put("label", parts[0]);
      try {
        Schema reader = byName.get(parts[1]);
        if (reader == null) {
          throw new IllegalArgumentException("no record schema named " + parts[1]);
        }
        byte[] message = HexFormat.of().parseHex(parts[2].strip());
        BinaryMessageDecoder<GenericRecord> decoder =
            new BinaryMessageDecoder<>(model, reader, store);
        GenericRecord record = decoder.decode(message);
        long fp = ByteBuffer.wrap(message, 2, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
        Schema writer = store.findByFingerprint(fp);
        long computed = SchemaNormalization.parsingFingerprint64(writer);
        byte[] le = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(computed).array();
        byte[] again = new BinaryMessageEncoder<GenericRecord>(model, writer).encode(record).array();
        out.put("ok", true);
        out.put("schema", writer.getFullName());
        out.put("fingerprint", HexFormat.of().formatHex(le));
        out.put("reencoded_equal", Arrays.equals(again, message));
        out.set("record", JSON.readTree(jsonEncoding(model, writer, record)));
      } catch (Exception e) {
        out.put("ok", false);
        out.put("error", e.getClass().getSimpleName() + ": " + e.getMessage());
      }
      stdout.print(JSON.writeValueAsString(out) + "\n");
    }
  }

  /** Each schema file as Avro's own parser reads it: its record's name and fingerprint. */
  private static void schemaFiles(Path dir) throws Exception {
    PrintStream stdout = new PrintStream(new FileOutputStream(FileDescriptor.out), true, "UTF-8");
    SchemaParser current = new SchemaParser();
    Map<Path, SchemaParser.ParseResult> parsed = new java.util.TreeMap<>();
    List<Path> files;
    try (var listing = Files.list(dir)) {
      files = listing.filter(p -> p.toString().endsWith(".avsc")).sorted().toList();
    }
    for (Path file : files) {
      try {
        parsed.put(file, current.parse(file));
      } catch (Exception e) {
        stdout.print(refused(file, e));
      }
    }
    for (Map.Entry<Path, SchemaParser.ParseResult> each : parsed.entrySet()) {
      try {
        stdout.print(described(each.getKey(), current.resolve(each.getValue())));
      } catch (Exception e) {
        stdout.print(refused(each.getKey(), e));
      }
    }
    List<Path> kept;
    try (var walk = Files.walk(dir.resolve("history"))) {
      kept = walk.filter(p -> p.toString().endsWith(".avsc")).sorted().toList();
    }
    for (Path file : kept) {
      try {
        stdout.print(described(file, SchemaParser.parseSingle(file)));
      } catch (Exception e) {
        stdout.print(refused(file, e));
      }
    }
  }

  private static String described(Path file, Schema schema) throws Exception {
    ObjectNode out = JSON.createObjectNode();
    out.put("file", file.toString());
    out.put("ok", true);
    out.put("schema", schema.getFullName());
    out.put("type", schema.getType().getName());
    long fp = SchemaNormalization.parsingFingerprint64(schema);
    byte[] le = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(fp).array();
    out.put("fingerprint", HexFormat.of().formatHex(le));
    return JSON.writeValueAsString(out) + "\n";
  }

  private static String refused(Path file, Exception e) throws Exception {
    ObjectNode out = JSON.createObjectNode();
    out.put("file", file.toString());
    out.put("ok", false);
    out.put("error", e.getClass().getSimpleName() + ": " + e.getMessage());
    return JSON.writeValueAsString(out) + "\n";
  }

  /** The record in the Avro specification's JSON encoding, as Avro's JsonEncoder writes it. */
  private static String jsonEncoding(GenericData model, Schema schema, GenericRecord record)
      throws Exception {
    ByteArrayOutputStream buf = new ByteArrayOutputStream();
    JsonEncoder encoder = EncoderFactory.get().jsonEncoder(schema, buf);
    new GenericDatumWriter<GenericRecord>(schema, model).write(record, encoder);
    encoder.flush();
    return buf.toString(StandardCharsets.UTF_8);
  }
}
