// Polyglot example, step `summary`: render a Markdown summary of a normalised batch.
// Parents: `normalise` (Python: valid and rejected records) and, if the template makes it a
// parent, `checksum` (C: CRC-32 and an amount histogram). Output:
// `{ text, total_cents, by_country }`.
import { exportHandler, Permanent, log } from "./tasker-sdk.js"; // copied beside this file by the build

function money(cents, currency) {
  const sign = cents < 0 ? "-" : "";
  const abs = Math.abs(cents);
  const units = String(Math.floor(abs / 100)).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return `${sign}${currency} ${units}.${String(abs % 100).padStart(2, "0")}`;
}

export const handle = exportHandler((ctx) => {
  const batch = ctx.parent("normalise");
  const sums = ctx.parents.checksum; // optional
  if (!Array.isArray(batch.valid)) throw new Permanent("parent `normalise` has no `valid` list");
  const currency = batch.currency || "EUR";

  const byCountry = {};
  let total = 0;
  for (const r of batch.valid) {
    const c = (byCountry[r.country] ??= { records: 0, amount_cents: 0 });
    c.records += 1;
    c.amount_cents += r.amount_cents;
    total += r.amount_cents;
  }
  const countries = Object.keys(byCountry).sort();

  const lines = [
    `# Batch ${batch.batch_id}`,
    "",
    `${batch.valid.length} valid records, ${batch.rejected.length} rejected, total ${money(total, currency)}.`,
    "",
    "| country | records | amount |",
    "|---|---:|---:|",
    ...countries.map((c) => `| ${c} | ${byCountry[c].records} | ${money(byCountry[c].amount_cents, currency)} |`),
  ];
  if (sums) {
    lines.push("", `Checksum: CRC-32 \`${sums.crc32}\` over ${sums.bytes} bytes (${sums.lines} lines).`);
  }
  if (sums && Array.isArray(sums.histogram) && sums.histogram.length) {
    lines.push("", `Amounts per ${money(sums.bucket_cents, currency)} bucket:`, "");
    sums.histogram.forEach((n, i) => {
      lines.push(`- ${money(i * sums.bucket_cents, currency)}+: ${"#".repeat(n)} ${n}`);
    });
  }
  if (batch.rejected.length) {
    lines.push("", "Rejected:", "");
    for (const r of batch.rejected) lines.push(`- row ${r.row} (${r.id || "no id"}): ${r.reason}`);
  }
  log.info(`summarised ${batch.valid.length} records in ${countries.length} countries`);
  return { text: lines.join("\n") + "\n", total_cents: total, by_country: byCountry };
});
