// The page as a drop target: the overlay while files are dragged over it, and what was dropped, folders read
// through (webkitGetAsEntry) with each file's path inside them.

const $ = (id) => document.getElementById(id);
const MAX_FILES = 10000; // a dropped folder larger than any model's

/** A FileSystemEntry's files, depth first, as {file, path}; hidden files (.DS_Store and the like) left out. */
async function entryFiles(entry, prefix, out) {
  if (entry.name.startsWith(".") || out.length >= MAX_FILES) return;
  if (entry.isFile) {
    out.push({ file: await new Promise((resolve, reject) => entry.file(resolve, reject)), path: prefix + entry.name });
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    // readEntries answers in batches (100 at a time in Chromium) until an empty one.
    for (;;) {
      const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
      if (!batch.length) break;
      for (const child of batch) await entryFiles(child, `${prefix}${entry.name}/`, out);
    }
  }
}

/**
 * The dropped files as {files: [{file, path}], name}: a lone folder's files have paths inside it and the folder
 * names the model; otherwise `name` is "". Read synchronously first: a DataTransfer's items die with the event.
 */
export async function droppedFiles(dataTransfer) {
  const items = [];
  for (const item of dataTransfer.items || []) {
    if (item.kind !== "file") continue;
    items.push({ entry: item.webkitGetAsEntry ? item.webkitGetAsEntry() : null, file: item.getAsFile() });
  }
  if (!items.length) items.push(...Array.from(dataTransfer.files || [], (file) => ({ entry: null, file })));
  const files = [];
  for (const { entry, file } of items) {
    if (entry && entry.isDirectory) await entryFiles(entry, "", files);
    else if (file && !file.name.startsWith(".")) files.push({ file, path: file.name });
  }
  const lone = items.length === 1 && items[0].entry && items[0].entry.isDirectory ? items[0].entry.name : "";
  if (lone) {
    for (const entry of files) entry.path = entry.path.slice(lone.length + 1);
  }
  return { files, name: lone };
}

export class DropZone {
  /**
   * @param accepting a function: whether a drop would be taken now (signed in)
   * @param onDrop    called with droppedFiles(...)'s answer
   * @param onError   called with the error when the dropped files cannot be read
   */
  constructor(accepting, onDrop, onError) {
    this.accepting = accepting;
    this.onDrop = onDrop;
    this.onError = onError;
    this.depth = 0; // dragenter/dragleave pairs, one per element crossed
  }

  /** Listen on the whole window: a person drops wherever the pointer happens to be. */
  wire() {
    window.addEventListener("dragenter", (event) => this.enter(event));
    window.addEventListener("dragover", (event) => this.over(event));
    window.addEventListener("dragleave", (event) => this.leave(event));
    window.addEventListener("drop", (event) => this.drop(event));
  }

  static carriesFiles(event) {
    return !!event.dataTransfer && Array.from(event.dataTransfer.types || []).includes("Files");
  }

  enter(event) {
    if (!DropZone.carriesFiles(event)) return;
    event.preventDefault();
    this.depth++;
    $("drop-overlay").hidden = !this.accepting();
  }

  over(event) {
    // Always prevented for files: a file dropped where nothing takes it would replace the page with itself.
    if (!DropZone.carriesFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = this.accepting() ? "copy" : "none";
  }

  leave(event) {
    if (!DropZone.carriesFiles(event)) return;
    this.depth = Math.max(0, this.depth - 1);
    if (!this.depth) $("drop-overlay").hidden = true;
  }

  async drop(event) {
    if (!DropZone.carriesFiles(event)) return;
    event.preventDefault();
    this.depth = 0;
    $("drop-overlay").hidden = true;
    if (!this.accepting()) return;
    let dropped;
    try {
      dropped = await droppedFiles(event.dataTransfer);
    } catch (exc) {
      this.onError(new Error(`The dropped files could not be read: ${exc.message || exc}`));
      return;
    }
    this.onDrop(dropped);
  }
}
