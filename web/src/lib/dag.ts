// Layered layout of the job DAG: a job's layer is the length of the longest `needs` chain before
// it, jobs within a layer are ordered by the mean position of what they need (fewer crossings),
// and edges are horizontal cubic curves from a job's right side to the next job's left side.

export interface DagJob {
  name: string
  index: number
  needs: readonly string[]
}

export interface DagEdgeIn {
  from_job: string
  to_job: string
}

export interface DagNode {
  name: string
  layer: number
  order: number
  x: number
  y: number
}

export interface DagEdge {
  from: string
  to: string
  path: string
}

export interface DagLayout {
  nodes: DagNode[]
  edges: DagEdge[]
  layers: string[][]
  width: number
  height: number
  nodeWidth: number
  nodeHeight: number
}

export interface DagOptions {
  nodeWidth?: number
  nodeHeight?: number
  gapX?: number
  gapY?: number
  padding?: number
}

export function layoutDag(jobs: readonly DagJob[], edgesIn: readonly DagEdgeIn[] = [], opts: DagOptions = {}): DagLayout {
  const nodeWidth = opts.nodeWidth ?? 190
  const nodeHeight = opts.nodeHeight ?? 54
  const gapX = opts.gapX ?? 64
  const gapY = opts.gapY ?? 18
  const pad = opts.padding ?? 12

  const byName = new Map(jobs.map((j) => [j.name, j]))
  // Edges come from both `needs` and the explicit edge list; unknown names are ignored.
  const parents = new Map<string, Set<string>>(jobs.map((j) => [j.name, new Set<string>()]))
  for (const j of jobs) for (const n of j.needs) if (byName.has(n) && n !== j.name) parents.get(j.name)!.add(n)
  for (const e of edgesIn) {
    if (byName.has(e.from_job) && byName.has(e.to_job) && e.from_job !== e.to_job) parents.get(e.to_job)!.add(e.from_job)
  }

  const layerOf = new Map<string, number>()
  const visiting = new Set<string>()
  const depth = (name: string): number => {
    const known = layerOf.get(name)
    if (known !== undefined) return known
    // A cycle cannot come from a validated workflow; cut it rather than recurse forever.
    if (visiting.has(name)) return 0
    visiting.add(name)
    let d = 0
    for (const p of parents.get(name) ?? []) d = Math.max(d, depth(p) + 1)
    visiting.delete(name)
    layerOf.set(name, d)
    return d
  }
  const sorted = [...jobs].sort((a, b) => a.index - b.index || a.name.localeCompare(b.name))
  for (const j of sorted) depth(j.name)

  const layers: string[][] = []
  for (const j of sorted) {
    const l = layerOf.get(j.name)!
    ;(layers[l] ??= []).push(j.name)
  }
  for (let l = 0; l < layers.length; l++) layers[l] ??= []

  const orderOf = new Map<string, number>()
  layers[0]?.forEach((n, i) => orderOf.set(n, i))
  for (let l = 1; l < layers.length; l++) {
    const layer = layers[l]!
    const key = new Map<string, number>()
    for (const n of layer) {
      const ps = [...(parents.get(n) ?? [])].map((p) => orderOf.get(p) ?? 0)
      key.set(n, ps.length ? ps.reduce((a, b) => a + b, 0) / ps.length : 0)
    }
    layer.sort((a, b) => key.get(a)! - key.get(b)! || byName.get(a)!.index - byName.get(b)!.index)
    layer.forEach((n, i) => orderOf.set(n, i))
  }

  const tallest = Math.max(0, ...layers.map((l) => l.length))
  const height = tallest === 0 ? 0 : pad * 2 + tallest * nodeHeight + (tallest - 1) * gapY
  const width = layers.length === 0 ? 0 : pad * 2 + layers.length * nodeWidth + (layers.length - 1) * gapX
  const nodes: DagNode[] = []
  const pos = new Map<string, DagNode>()
  layers.forEach((layer, l) => {
    // Centre short layers against the tallest one.
    const layerHeight = layer.length * nodeHeight + Math.max(0, layer.length - 1) * gapY
    const top = (height - layerHeight) / 2
    layer.forEach((name, i) => {
      const node = { name, layer: l, order: i, x: pad + l * (nodeWidth + gapX), y: top + i * (nodeHeight + gapY) }
      nodes.push(node)
      pos.set(name, node)
    })
  })

  const edges: DagEdge[] = []
  for (const j of sorted) {
    for (const p of [...parents.get(j.name)!].sort()) {
      const a = pos.get(p)!
      const b = pos.get(j.name)!
      const x1 = a.x + nodeWidth
      const y1 = a.y + nodeHeight / 2
      const x2 = b.x
      const y2 = b.y + nodeHeight / 2
      const dx = Math.max(24, (x2 - x1) / 2)
      edges.push({ from: p, to: j.name, path: `M ${x1} ${y1} C ${x1 + dx} ${y1}, ${x2 - dx} ${y2}, ${x2} ${y2}` })
    }
  }
  return { nodes, edges, layers, width, height, nodeWidth, nodeHeight }
}
