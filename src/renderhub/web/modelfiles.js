// Model files as a person hands them over: which of them are models, and the folder an upload goes to.

/** What the hub's conversions read (as `renderhub convert` knows them). */
export const MODEL_SUFFIXES = [
  ".fbx", ".gltf", ".glb", ".obj", ".dae", ".3ds", ".stl", ".ply", ".xyz", ".e57", ".las", ".laz",
];
const MAX_FOLDER_NAME = 48;

/** The last segment of a slash-separated path. */
export function baseName(path) {
  return path.split("/").pop();
}

/** A file name without its last extension. */
export function stem(path) {
  const name = baseName(path);
  const dot = name.lastIndexOf(".");
  return dot > 0 ? name.slice(0, dot) : name;
}

export function isModel(path) {
  const lower = path.toLowerCase();
  return MODEL_SUFFIXES.some((suffix) => lower.endsWith(suffix));
}

export function isZip(path) {
  return path.toLowerCase().endsWith(".zip");
}

/** The models among relative paths, shallowest first, then by name: the likeliest one leads. */
export function modelsAmong(paths) {
  const depth = (path) => path.split("/").length;
  return paths
    .filter((path) => isModel(path) && !baseName(path).startsWith("."))
    .sort((a, b) => depth(a) - depth(b) || a.localeCompare(b));
}

/**
 * The folder an upload goes to, which also names its conversion: the model's name in lowercase letters,
 * digits and single hyphens (a blob folder and a conversion id both take it), and a short random suffix so
 * that uploading the same model twice keeps both.
 */
export function folderFor(name) {
  const plain = name
    .normalize("NFKD")
    .replace(/[\u0300-\u036f]/g, "")
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, MAX_FOLDER_NAME)
    .replace(/-+$/, "");
  const bytes = crypto.getRandomValues(new Uint8Array(3));
  const suffix = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${plain || "model"}-${suffix}`;
}
